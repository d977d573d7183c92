"""The monoq image's HEALTHCHECK.

It reads the configuration the way ``monoq run`` does (``$MONOQ_CONFIG``, the environment), so
it probes the address the api role really listens on:

- a process with the api role: ``GET /healthz`` must answer 200 within 5 s;
- a process without it (``MONOQ_MONOQ_ROLES=worker`` or ``scheduler``) serves no HTTP, so the
  check is ``monoq doctor``: the backend answers and is safely configured. It does not prove
  that this process's worker loop is alive.

Roles given with ``monoq run --roles`` are not visible here: in containers set them with
``MONOQ_MONOQ_ROLES`` so that this check knows them.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

from monoq.config import Config, load_config

PATH = "/healthz"
TIMEOUT = 5.0
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": "127.0.0.1"}  # noqa: S104


def healthz_url(config: Config) -> str:
    """The URL of /healthz on this host for the api role's configured address."""
    host = _ANY.get(config.api.host, config.api.host).strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{config.api.port}{PATH}"


def main(env: Mapping[str, str] | None = None) -> int:
    """0 when healthy, else 1 (with the reason on stderr)."""
    config = load_config(env=env)
    if "api" not in config.monoq.roles:
        from monoq.cli import main as cli_main

        return cli_main(["doctor"])
    url = healthz_url(config)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - http only
            status = int(answer.status)
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"unhealthy: GET {url}: {exc}\n")
        return 1
    if status != 200:
        sys.stderr.write(f"unhealthy: GET {url} answered {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
