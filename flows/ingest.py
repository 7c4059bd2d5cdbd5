"""The ingest flow: the ingest stage's steps (flows/stages/ingest/) as coarse Prefect tasks — plan,
revalidate when there are quarantined records to judge again, one task per group of files,
commit — and the report as the artifact "ingest-report"."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE

from flows.stages.common import MAX_ROWS, as_of_instant, open_catalog, open_lake
from flows.stages.ingest import IngestReport, IngestRun, check_age, requeue_reasons


@task(name="ingest-plan", cache_policy=NO_CACHE)
def _plan_task(run: IngestRun) -> list[list[int]]:
    return run.plan()


@task(name="ingest-revalidate", cache_policy=NO_CACHE)
def _revalidate_task(run: IngestRun) -> None:
    run.revalidate()


@task(name="ingest-files", cache_policy=NO_CACHE, task_run_name="ingest-files-{label}")
def _group_task(run: IngestRun, group: list[int], label: str) -> list[dict]:
    return [r.__dict__.copy() for r in run.ingest_group(group)]


@task(name="ingest-commit", cache_policy=NO_CACHE)
def _finish_task(run: IngestRun) -> IngestReport:
    return run.finish()


@flow(name="ingest")
def ingest_flow(lake: str | None = None, as_of: str | None = None, max_event_age_days: int | None = None,
                memory_limit: str | None = None, allow_future: bool = False,
                requeue: list[str] | None = None) -> dict:
    """raw files -> events, quarantine, ingest_files; quarantined records of the clock-dependent
    reasons (and of `requeue`) judged again; returns the report as a dict.
    An `as_of` more than 5 minutes ahead of the clock is refused unless `allow_future`."""
    lk = open_lake(lake)
    cat = open_catalog(lk)
    instant = as_of_instant(as_of, allow_future, name="as_of", flag="allow_future=True")
    age = check_age(max_event_age_days)
    reasons = requeue_reasons(requeue)
    logger = get_run_logger()
    started = time.monotonic()
    run = IngestRun(lk, cat, instant, age, progress=logger.info, memory_limit=memory_limit, requeue=reasons)
    try:
        groups = _plan_task(run)
        if run.plans_revalidation:
            _revalidate_task(run)
        for i, group in enumerate(groups, 1):
            _group_task(run, group, f"{i}-of-{len(groups)}")
        report = _finish_task(run)
    finally:
        run.close()
    create_markdown_artifact(key="ingest-report", markdown=report.to_markdown(MAX_ROWS), description=report.summary())
    logger.info("%s (%.1f s)", report.summary(), time.monotonic() - started)
    return report.to_dict()
