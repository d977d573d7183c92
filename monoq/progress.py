"""Progress bars for long command-line work (``enqueue --batch``, ``dlq requeue|purge``,
``bench``), drawn with rich on an interactive stderr and silent otherwise."""

from __future__ import annotations

import sys
from typing import Any, Self


class Progress:
    """Progress of long work (``enqueue --batch``, ``dlq requeue|purge``, ``bench``): rich
    progress bars on stderr while stderr is an interactive terminal and the output is not
    ``--json``. Otherwise every method does nothing, so piped and JSON output are unchanged.
    rich's own switches apply too: ``TTY_INTERACTIVE=0`` or ``TERM=dumb`` turn the bars off.

    While the bars are drawn, lines written to ``sys.stderr`` are printed above them. Tasks
    count jobs unless ``unit`` says otherwise ("bytes" is shown as kB/MB).
    """

    def __init__(self, enabled: bool = True) -> None:
        self._bars: Any = None  # rich.progress.Progress, imported only for a terminal
        if not enabled or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            ProgressColumn,
            Task,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars
        from rich.text import Text

        class Amount(ProgressColumn):
            """Done and total in the task's unit, or with ``per``, its rate."""

            def __init__(self, per: str = "") -> None:
                super().__init__()
                self.per = per

            def render(self, task: Task) -> Text:
                unit = task.fields.get("unit", "jobs")
                if self.per:
                    return Text(_amount(task.finished_speed or task.speed, None, unit, "/s"))
                return Text(_amount(task.completed, task.total, unit))

        console = Console(stderr=True)
        if console.is_interactive:
            self._bars = Bars(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), Amount(),
                Amount("/s"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                transient=True, redirect_stdout=False, redirect_stderr=True)

    @property
    def live(self) -> bool:
        """Whether bars are drawn."""
        return self._bars is not None

    def __enter__(self) -> Self:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add(self, description: str, total: float | None = None, unit: str = "jobs") -> int:
        """A new task (a bar; with no total, a count and a rate); answers its id."""
        if self._bars is None:
            return 0
        return int(self._bars.add_task(description, total=total, unit=unit))

    def advance(self, task: int, amount: float) -> None:
        """``amount`` more of the task done."""
        if self._bars is not None:
            self._bars.advance(task, amount)

    def update(self, task: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        """Set how much is done, the total or the description."""
        if self._bars is not None:
            self._bars.update(task, completed=completed, total=total, description=description)

    def finish(self, task: int) -> None:
        """The task is done: it leaves the screen."""
        if self._bars is not None:
            self._bars.remove_task(task)


def _amount(done: float | None, total: float | None, unit: str, per: str = "") -> str:
    """``1,200/5,000 jobs``, ``3.1/12.0 MB``, ``850 jobs/s`` (empty when ``done`` is None)."""
    if done is None:
        return ""
    if unit == "bytes":
        from rich.filesize import decimal

        shown = decimal(int(done)) + ("" if total is None else f"/{decimal(int(total))}")
        return shown + per
    shown = f"{done:,.0f}" + ("" if total is None else f"/{total:,.0f}")
    return f"{shown} {unit}{per}"
