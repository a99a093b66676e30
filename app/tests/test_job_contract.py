"""Old and new code share the queue during a rolling update (grimbots.job_contract): a job the
previous release enqueued (app/tests/job_contract.json, its entry points and arguments) still
runs on this release's workers, and this release enqueues nothing the previous one's workers
could not run. What this proves: every pinned path resolves the way RQ's worker resolves it and
binds the pinned arguments; every producer is refused a path or arity the contract lacks. What it
does not: that a job's meaning (the fields of a dict argument) is the same in both releases."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from rq.utils import import_attribute

from grimbots import campaigns, intake, job_contract, payments, reconcile, tracking
from grimbots.job_contract import ENTRY_POINTS, UnknownJob

PINNED = json.loads((Path(__file__).with_name("job_contract.json")).read_text())


@pytest.mark.parametrize("path", sorted(PINNED))
def test_a_job_the_previous_release_enqueued_runs_on_this_one(path):
    func = import_attribute(path)  # what rq.job.Job.func does in the worker
    assert callable(func), path
    # Bound by position, as RQ calls it: extra parameters must come last, with a default.
    inspect.signature(func).bind(*(object() for _ in PINNED[path]))


@pytest.mark.parametrize("path", sorted(PINNED))
def test_the_contract_keeps_every_pinned_entry_point_and_its_arguments(path):
    assert ENTRY_POINTS.get(path) == tuple(PINNED[path]), (
        f"{path}: changing or removing a pinned job breaks the workers of the other release "
        "during an update (grimbots.job_contract's rules)"
    )


def test_a_new_entry_point_is_pinned_before_any_release_enqueues_it():
    new = sorted(set(ENTRY_POINTS) - set(PINNED))
    assert not new, (
        f"{new}: the previous release's workers cannot import these; add them to "
        "app/tests/job_contract.json and enqueue them only from the release after"
    )


def test_the_producers_paths_are_in_the_contract():
    names = [f"{reconcile.__name__}.{fn.__name__}" for fn in reconcile.RECONCILERS]
    for path in [intake.JOB_FUNC, payments.DELIVER_JOB, campaigns.JOB, *names]:
        assert path in ENTRY_POINTS, path
    # The webhook intake writes its job hash itself, with these two arguments.
    job_contract.check(intake.JOB_FUNC, (0, {}))
    assert "grimbots.jobs.record_click" in inspect.getsource(tracking)


def test_a_job_outside_the_contract_is_refused():
    def not_a_job():
        pass

    with pytest.raises(UnknownJob, match="not a job entry point"):
        job_contract.check(not_a_job, ())
    with pytest.raises(UnknownJob, match="takes 1 positional"):
        job_contract.check("grimbots.jobs.deliver_access", (1, 2))


def test_the_queue_refuses_what_the_contract_lacks():
    from grimbots import queues

    with pytest.raises(UnknownJob):
        queues.enqueue(queues.TASKS, "grimbots.jobs.not_there")
