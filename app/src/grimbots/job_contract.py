"""The jobs a release may enqueue: the path RQ stores for each and the positional arguments it
passes. During a rolling update (docs/operations.md, "Update the app") old and new workers take
jobs from one queue, so a job enqueued by either release must run on both.

The rules (app/tests/test_job_contract.py pins them against app/tests/job_contract.json, the
shapes the previous release enqueues):
- an entry point keeps its path and accepts the arguments it was enqueued with: new parameters
  come last, with a default;
- a new entry point is enqueued only by the release after the one that added it (old workers
  could not import it); a removed one stays importable for one release.
Every producer goes through grimbots.queues, which refuses a path or an argument count missing
here, so an unpinned job cannot reach the queue.
"""

from __future__ import annotations

from collections.abc import Callable

# Path RQ stores (module.qualname, or the string a producer passes) -> positional parameters.
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "grimbots.jobs.process_update": ("bot_id", "update"),
    "grimbots.jobs.record_click": ("data",),
    "grimbots.jobs.deliver_access": ("payment_id",),
    "grimbots.funnel.create_charge": (
        "bot_id",
        "lead_id",
        "source",
        "offer_id",
        "amount_cents",
        "downsell_position",
    ),
    "grimbots.funnel.run_downsell": ("payment_id", "position", "generation"),
    "grimbots.campaigns.run_campaign_batch": ("campaign_id", "batch_size"),
    "grimbots.reconcile.requeue_lost_updates": (),
    "grimbots.reconcile.reconcile_outbox": (),
    "grimbots.reconcile.reconcile_payments": (),
    "grimbots.reconcile.reconcile_campaigns": (),
    "grimbots.reconcile.purge_idempotency_keys": (),
    "grimbots.reconcile.purge_inbound_updates": (),
}


class UnknownJob(ValueError):
    """A job whose path or argument count the contract does not list."""


def path_of(func: str | Callable) -> str:
    """The path RQ stores for ``func`` (as rq.job.Job does)."""
    if isinstance(func, str):
        return func
    return f"{func.__module__}.{func.__qualname__}"


def check(func: str | Callable, args: tuple) -> str:
    """The job's path, once the contract lists it with this many positional arguments."""
    path = path_of(func)
    if path not in ENTRY_POINTS:
        raise UnknownJob(f"{path} is not a job entry point (grimbots.job_contract)")
    if len(args) != len(ENTRY_POINTS[path]):
        raise UnknownJob(
            f"{path} takes {len(ENTRY_POINTS[path])} positional arguments in the job contract "
            f"({', '.join(ENTRY_POINTS[path]) or 'none'}), not {len(args)}"
        )
    return path
