"""Run the network-fault scenario for longer: ``python -m tests.netns.soak --seconds 600``.

Needs root (it builds network namespaces). Repeats the fault cycle until the time is up and
prints one report line per fault; exits 1 if any acknowledged job was lost, a rerun was not
explained by a reclaim, or a cron slot fired other than once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

from ._scenario import FAULTS, FaultReport, Scenario


def _bad(report: FaultReport) -> bool:
    return bool(report.lost or report.unexplained_duplicates or report.cron_doubled
                or report.cron_missed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=50, help="HTTP submits per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="monoq-netns-") as tmp:
        scenario = Scenario(Path(tmp), rate=args.rate)
        deadline = time.monotonic() + args.seconds
        cycles = max(1, int(args.seconds // 60))
        faults = FAULTS * cycles
        bad = False

        def show(report: FaultReport) -> None:
            nonlocal bad
            bad = bad or _bad(report)
            sys.stdout.write(report.line() + "\n")
            sys.stdout.flush()

        try:
            anyio.run(lambda: scenario.run(faults, on_report=show))
        finally:
            scenario.close()
        sys.stdout.write(f"done in {args.seconds - (deadline - time.monotonic()):.0f}s: "
                         f"{'FAILED' if bad else 'ok'}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
