"""Where a running handler is: the stack of its asyncio task or of its thread.

A stuck job is diagnosed by where it was when it had to stop. For an async handler that is the
chain of awaits of its task (asyncio's ``Task.get_stack`` gives only the outermost frame of a
suspended coroutine, so the chain is followed through ``cr_await``); for a sync handler it is
its thread's current frame (``sys._current_frames``).
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

from monoq.core.models import TRACEBACK_LIMIT

# Frames of these files are the machinery around a handler, not the handler itself.
_MACHINERY = (f"{Path('monoq', 'worker.py')}", f"{Path('anyio', '')}",
              f"{Path('asyncio', '')}", f"{Path('concurrent', 'futures', '')}",
              f"{Path('threading.py')}")


def _await_frames(coro: Coroutine[Any, Any, Any] | Any) -> list[FrameType]:
    frames: list[FrameType] = []
    current: Any = coro
    for _ in range(1000):  # a chain of awaits, outermost first; bounded against cycles
        if current is None:
            break
        frame = (getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
                 or getattr(current, "ag_frame", None))
        if frame is not None:
            frames.append(frame)
        current = (getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom", None)
                   or getattr(current, "ag_await", None))
    return frames


def task_stack(task: asyncio.Task[Any]) -> traceback.StackSummary:
    """The awaits of ``task``, outermost first, without the worker's own frames."""
    frames = [f for f in _await_frames(task.get_coro()) if not _is_worker(f)]
    return traceback.StackSummary.extract((f, f.f_lineno) for f in frames)


def thread_stack(ident: int) -> traceback.StackSummary | None:
    """The current stack of thread ``ident``, outermost first (None if it has ended)."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return None
    stack = traceback.StackSummary.extract(traceback.walk_stack(frame))
    stack.reverse()
    return traceback.StackSummary.from_list(
        [entry for entry in stack if not entry.filename.endswith(_MACHINERY[-1])])


def _is_worker(frame: FrameType) -> bool:
    return frame.f_code.co_filename.endswith(_MACHINERY[0])


def where(stack: traceback.StackSummary) -> str:
    """``file.py:12 in name`` of the innermost frame that is the handler's own code (not
    anyio, asyncio or thread machinery); '' when there is none."""
    for entry in reversed(stack):
        if not any(part in entry.filename for part in _MACHINERY):
            return f"{Path(entry.filename).name}:{entry.lineno} in {entry.name}"
    return ""


def render(stack: traceback.StackSummary, header: str) -> str:
    """``header`` and the stack as a traceback-like text, bounded like tracebacks are."""
    text = header + "\n" + "".join(stack.format())
    return text if len(text) <= TRACEBACK_LIMIT else text[:200] + "\n…\n" + text[-(
        TRACEBACK_LIMIT - 210):]
