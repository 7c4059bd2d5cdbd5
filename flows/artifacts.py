"""Prefect artifacts a person would open: the run report (markdown) and the `invoices` table, as
flows/stages/run_report.py writes them."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from catalog import Lake
from flows.stages.run_report import failure_markdown, invoices_table, run_report_markdown, write_report_file


def invoices_artifact(lk: Lake) -> None:
    """Publish the `invoices` table artifact (in a flow or task run)."""
    rows, description = invoices_table(lk)
    create_table_artifact(key="invoices", table=rows or [{"invoice_id": "(no invoices yet)"}],
                          description=description)


def run_report_artifact(lk: Lake, as_of: str, ingest: dict | None = None, bill: dict | None = None,
                        alerts: dict | None = None, *, meter: dict | None = None, key: str = "run-report",
                        title: str | None = None, fired_from: str | None = None, timings: dict | None = None) -> str:
    """Publish the run report as the markdown artifact `key` and the file `report_file(lk, key)`
    (written then renamed); returns its text."""
    text = run_report_markdown(lk, as_of, ingest, meter, bill, alerts, title=title, fired_from=fired_from,
                               timings=timings)
    write_report_file(lk, key, text)
    create_markdown_artifact(key=key, markdown=text, description=f"{title or 'meterbill run'} as of {as_of}")
    return text


def failure_artifact(key: str, title: str, stage: str, error: BaseException, lk: Lake | None = None) -> None:
    """A short report of a failed run: which stage, what error, as the artifact `key` and, with
    `lk`, the file `report_file(lk, key)` (best effort: never raises)."""
    text = failure_markdown(title, stage, error)
    if lk is not None:
        try:
            write_report_file(lk, key, text)
        except Exception:  # noqa: BLE001  (the run's own error is what matters)
            pass
    try:
        create_markdown_artifact(key=key, description=f"{title}: failed at {stage}", markdown=text)
    except Exception:  # noqa: BLE001  (the run's own error is what matters)
        pass
