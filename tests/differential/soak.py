"""Run the differential machine on random examples for as long as asked.

    python -m tests.differential.soak --seconds 600

Rounds of random examples (a fresh seed each, no example database) run until the time is up.
A disagreement between a backend and the model stops the run: Hypothesis shrinks it and prints
the minimal sequence of calls, and the exit status is 1. Needs ``redis-server`` on the PATH (a
private one is started on a Unix socket).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from hypothesis import HealthCheck, Phase, Verbosity, settings

from tests.differential.machine import harness, run


def say(text: str, *, error: bool = False) -> None:
    """One line of the soak's report."""
    out = sys.stderr if error else sys.stdout
    out.write(text + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.differential.soak",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to run (a round that started goes on to its end)")
    parser.add_argument("--examples", type=int, default=200, help="examples per round")
    parser.add_argument("--steps", type=int, default=60, help="most calls in one example")
    args = parser.parse_args(argv)
    how = settings(
        max_examples=args.examples,
        stateful_step_count=args.steps,
        database=None,
        deadline=None,
        print_blob=True,
        phases=[Phase.generate, Phase.shrink],
        verbosity=Verbosity.normal,
        suppress_health_check=list(HealthCheck),
    )
    started = time.monotonic()
    rounds = 0
    with harness() as made:
        while rounds == 0 or time.monotonic() - started < args.seconds:
            rounds += 1
            try:
                run(made, how)
            except Exception:  # noqa: BLE001 - any failure ends the soak, reported
                traceback.print_exc()
                say(f"FAILED in round {rounds} after {time.monotonic() - started:.0f} s "
                    "(the minimal example is printed above)", error=True)
                return 1
            say(f"round {rounds}: {args.examples} examples agreed "
                f"({time.monotonic() - started:.0f} s)")
    say(f"no disagreement in {rounds} rounds of {args.examples} examples "
        f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
