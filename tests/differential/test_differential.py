"""The backends against the reference model, in lock-step, a bounded number of examples.

Deterministic (``derandomize``, no example database): the same examples every run, so CI is
reproducible and writes nothing. ``python -m tests.differential.soak --seconds N`` runs the same
machine on random examples for as long as asked.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

from tests.differential.machine import harness, run

CI_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_every_backend_answers_as_the_model() -> None:
    with harness() as made:
        run(made, CI_SETTINGS)
