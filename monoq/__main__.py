"""``python -m monoq`` is the ``monoq`` command."""

from monoq.cli import main

raise SystemExit(main())
