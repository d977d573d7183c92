"""JobQuery: the one value list_jobs takes, checked where it is built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from monoq.core.models import TERMINAL_STATES, Job, JobQuery, JobState
from monoq.errors import ValidationError

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def job(**fields: Any) -> Job:
    base = Job(id="j1", queue="mail", handler="send", payload_json=b"null", priority=5,
               state=JobState.QUEUED, attempt=0, max_retries=3, timeout=60.0, run_at=T0,
               created_at=T0)
    return attrs.evolve(base, **fields)


def test_states_are_taken_by_value_or_by_name() -> None:
    assert JobQuery(states=["dead", JobState.QUEUED]).states == frozenset(
        {JobState.DEAD, JobState.QUEUED})
    assert JobQuery(states="dead").states == frozenset({JobState.DEAD})
    assert JobQuery().states is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"states": ["dead", "gone"]}, "state"),
    ({"queue": ""}, "queue"),
    ({"handler": 7}, "handler"),
    ({"error_type": ""}, "error_type"),
    ({"cursor": ""}, "cursor"),
    ({"limit": "10"}, "limit"),
    ({"limit": True}, "limit"),
    ({"finished_after": T0.replace(tzinfo=None)}, "finished_after"),
    ({"finished_before": "2030-01-01T00:00:00Z"}, "finished_before"),
])
def test_bad_filters_are_refused_naming_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobQuery(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_finish_window_narrows_the_states_to_terminal_ones() -> None:
    assert JobQuery(finished_after=T0).listed_states() == TERMINAL_STATES
    window = JobQuery(states={JobState.DEAD, JobState.QUEUED}, finished_before=T0)
    assert window.listed_states() == frozenset({JobState.DEAD})
    assert JobQuery(states={JobState.QUEUED}, finished_after=T0).empty
    assert JobQuery(states=[]).empty
    assert JobQuery(limit=0).empty
    assert not JobQuery(states={JobState.QUEUED}).empty


def test_matches_applies_every_filter() -> None:
    dead = job(state=JobState.DEAD, error="Boom: no", finished_at=T0, schedule_id="s")
    assert JobQuery(queue="mail", handler="send", states={JobState.DEAD}, schedule_id="s",
                    error_type="Boom", finished_after=T0,
                    finished_before=T0 + timedelta(milliseconds=1)).matches(dead)
    assert not JobQuery(queue="other").matches(dead)
    assert not JobQuery(error_type="Bo").matches(dead)
    assert not JobQuery(finished_before=T0).matches(dead)  # exclusive
    assert not JobQuery(finished_after=T0).matches(job())  # not finished
    assert JobQuery().matches(job())
