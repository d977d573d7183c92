"""What the dashboard ships: the vendored htmx matches its manifest, every asset is in the
wheel's package data, templates hold no inline script or style (the CSP forbids them), and the
server-side chart and "worth a look" logic."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monoq.core.models import JobState, QueueStats, Schedule, ThroughputBucket, WorkerInfo
from monoq.ui.charts import nice_ceiling, sparkline, throughput_chart
from monoq.ui.fmt import percentile, span
from monoq.ui.pages import find_problems

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "monoq" / "ui"
VENDOR = UI / "static" / "vendor"
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def test_vendored_files_match_their_manifest() -> None:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    listed = set()
    for entry in manifest["files"]:
        shipped = VENDOR / entry["file"]
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() == entry["sha256"], entry["file"]
        licence = VENDOR / entry["license_file"]
        assert hashlib.sha256(licence.read_bytes()).hexdigest() == entry["license_sha256"]
        assert entry["source"] == (f"https://registry.npmjs.org/{entry['package']}/-/"
                                   f"{entry['package']}-{entry['version']}.tgz")
        listed |= {entry["file"], entry["license_file"]}
    assert listed | {"MANIFEST.json"} == {p.name for p in VENDOR.iterdir()}  # nothing unlisted


def test_htmx_is_the_pinned_2x_release() -> None:
    [entry] = json.loads((VENDOR / "MANIFEST.json").read_text())["files"]
    assert (entry["package"], entry["license"]) == ("htmx.org", "0BSD")
    assert re.fullmatch(r"2\.0\.\d+", entry["version"])
    assert f'version:"{entry["version"]}"' in (VENDOR / "htmx.min.js").read_text()


def test_every_asset_is_in_the_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["monoq.ui"]
    for folder in ("templates", "static"):
        for path in (UI / folder).rglob("*"):
            if path.is_file():
                relative = path.relative_to(UI).as_posix()
                assert any(fnmatch.fnmatchcase(relative, p) for p in patterns), relative
    assert "jinja2>=3.1" in config["project"]["dependencies"]


@pytest.mark.parametrize("template", sorted((UI / "templates").glob("*.html")),
                         ids=lambda p: p.name)
def test_templates_hold_no_inline_script_or_style(template: Path) -> None:
    text = template.read_text()
    for tag in re.findall(r"<script\b[^>]*>", text):
        assert "src=" in tag, tag  # scripts come from files only
    assert not re.search(r"<script\b[^>]*>(?!</script>)", text)  # and carry no body
    assert not re.search(r"\son[a-z]+\s*=", text), "inline event handler"
    assert not re.search(r"\sstyle\s*=", text), "inline style attribute"
    assert "<style" not in text
    assert "hx-on" not in text and "javascript:" not in text


def test_own_script_uses_no_eval() -> None:
    script = (UI / "static" / "app.js").read_text()
    for word in ("eval(", "new Function", "innerHTML", "setTimeout(\"", "setInterval(\""):
        assert word not in script


def _buckets(values: list[tuple[int, int, int]]) -> list[ThroughputBucket]:
    start = NOW - timedelta(minutes=len(values))
    return [ThroughputBucket(start=start + timedelta(minutes=i), completed=c, failed=f, dead=d)
            for i, (c, f, d) in enumerate(values)]


def test_throughput_chart_stacks_failed_on_completed_to_scale() -> None:
    chart = throughput_chart(_buckets([(0, 0, 0), (30, 10, 2), (80, 0, 0), (5, 5, 5)]))
    assert [t.label for t in chart.y_ticks] == ["100", "50", "0"]
    empty, mixed, full, _ = chart.bars
    assert empty.completed_h == empty.failed_h == 0
    scale = (chart.height - 1) / 100
    assert mixed.completed_h == pytest.approx(30 * scale, abs=0.01)
    assert mixed.failed_h == pytest.approx(10 * scale, abs=0.01)
    assert mixed.failed_y + mixed.failed_h == pytest.approx(mixed.completed_y, abs=0.01)
    assert full.completed_y == pytest.approx(chart.height - 80 * scale, abs=0.01)
    assert "30 completed, 10 failed (2 dead)" in mixed.title
    assert (chart.completed, chart.failed, chart.dead) == (115, 15, 7)
    assert chart.x_labels[0] == "11:56" and chart.x_labels[-1] == "11:59"
    assert all(b.x + b.width <= chart.width for b in chart.bars)


def test_chart_and_number_helpers() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 20, 21, 499, 501)] == [1, 1, 5, 20, 50, 500, 1000]
    assert sparkline([]) == ""
    assert sparkline([0, 4]).split() == ["0.0,23.0", "120.0,1.0"]
    assert percentile([], 0.5) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
    assert [span(s) for s in (0.25, 4.2, 42, 185, 7200, 90000)] == [
        "250 ms", "4.2 s", "42 s", "3 min 5 s", "2 h", "1 d 1 h"]


def _stats(queue: str, queued: int = 0, oldest: timedelta | None = None, paused: bool = False,
           **counts: int) -> QueueStats:
    all_counts = {JobState.QUEUED: queued, **{JobState(k): v for k, v in counts.items()}}
    return QueueStats(queue=queue, counts=all_counts, paused=paused,
                      oldest_queued_at=None if oldest is None else NOW - oldest)


def _worker(queues: tuple[str, ...], busy: int, concurrency: int = 4) -> WorkerInfo:
    return WorkerInfo(id="w", host="h", pid=1, roles=("worker",), queues=queues,
                      concurrency=concurrency, busy=busy, started_at=NOW, last_seen=NOW)


def test_problems_worth_a_look() -> None:
    problems = find_problems(
        prefix="/ui", now=NOW,
        stats=[_stats("mail", 40, timedelta(minutes=3)),
               _stats("paused", 2, timedelta(minutes=5), paused=True),
               _stats("orphan", 1, timedelta(minutes=2)),
               _stats("fresh", 9, timedelta(seconds=10)),
               _stats("idle", scheduled=3)],
        workers=[_worker(("mail", "fresh"), busy=4)],
        schedulers={"s1": NOW - timedelta(minutes=10)}, schedules=[],
        dead_recent=3, dead_hour=8, overdue=60, silent=180,
    )
    texts = [p.text for p in problems]
    assert texts[0].startswith("Queue mail: the oldest of 40 queued jobs has waited 3 min")
    assert texts[0].endswith("its workers are busy (4 of 4 slots).")
    assert "the queue is paused" in texts[1]
    assert "no live worker consumes it" in texts[2]
    assert not any("fresh" in t for t in texts)  # 10 s is not overdue
    assert "3 jobs died in the last 15 minutes (8 in the last hour)" in texts[3]
    assert texts[4].startswith("The scheduler has been silent for 10 min")
    assert len(problems) == 5


def test_no_problem_when_all_is_well() -> None:
    schedule = Schedule(id="s", handler="echo", every=60)
    assert find_problems(
        prefix="/ui", now=NOW, stats=[_stats("mail", 2, timedelta(seconds=5))],
        workers=[_worker(("mail",), busy=1)], schedulers={"s1": NOW - timedelta(seconds=30)},
        schedules=[schedule], dead_recent=0, dead_hour=4, overdue=60, silent=180,
    ) == []
    # A silent scheduler matters only when something waits for one.
    assert find_problems(
        prefix="/ui", now=NOW, stats=[], workers=[], schedulers={}, schedules=[],
        dead_recent=0, dead_hour=0, overdue=60, silent=180,
    ) == []

