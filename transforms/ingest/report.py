"""The ingest report: per file, totals, quarantine reasons, undefined customers and meters."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

STATUS_INGESTED = "ingested"
STATUS_UNREADABLE = "unreadable"
STATUS_SKIPPED = "skipped"  # in the report only: already ingested (same sha256), nothing written


@dataclass
class FileResult:
    source_file: str  # path relative to raw/ (POSIX)
    sha256: str
    format: str | None  # parquet, ndjson, json, csv (+ ".gz"); None if not a SPEC §2 type
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    status: str = STATUS_INGESTED
    error: str | None = None  # unreadable: why; skipped: why
    supersedes: str | None = None  # a new version of a file ingested before: the sha256 it replaces

    def line(self, i: int, n: int) -> str:
        """The progress line of this file, e.g. `[3/10] raw/x.csv: 1000 rows, 990 accepted, ...`."""
        head = f"[{i}/{n}] raw/{self.source_file}: "
        if self.status == STATUS_SKIPPED:
            return head + f"skipped ({self.error})"
        new = " (a new version)" if self.supersedes else ""
        if self.status == STATUS_UNREADABLE:
            return head + f"unreadable ({self.error})" + new
        return head + (f"{self.rows_read} rows, {self.accepted} accepted, "
                       f"{self.duplicates} duplicates, {self.quarantined} quarantined") + new


@dataclass
class IngestReport:
    as_of: dt.datetime
    ingested_at: dt.datetime
    max_event_age_days: int
    run_id: str | None = None  # None when there was nothing new to ingest
    files: list[FileResult] = field(default_factory=list)  # every file found, in processing order
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    undefined_customers: dict[str, int] = field(default_factory=dict)  # id -> accepted events
    undefined_meters: dict[str, int] = field(default_factory=dict)
    cancellations: int = 0  # accepted cancellation records
    event_dates: list[dt.date] = field(default_factory=list)  # UTC dates that received events
    # quarantined records judged again (clock-dependent reasons, and those of `requeue`): how many,
    # by the reason they had, and what became of them (the rest stay quarantined)
    requeue: list[str] = field(default_factory=list)  # reasons asked for besides the clock-dependent ones
    revalidated: int = 0
    revalidated_by_reason: dict[str, int] = field(default_factory=dict)
    revalidated_accepted: int = 0
    revalidated_duplicates: int = 0

    # ------------------------------------------------------------ totals
    def _sum(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files if f.status != STATUS_SKIPPED)

    @property
    def rows_read(self) -> int:
        return self._sum("rows_read")

    @property
    def accepted(self) -> int:
        return self._sum("accepted")

    @property
    def duplicates(self) -> int:
        return self._sum("duplicates")

    @property
    def quarantined(self) -> int:
        """Quarantined records (an unreadable file's own quarantine row is not a record)."""
        return self._sum("quarantined")

    @property
    def files_found(self) -> int:
        return len(self.files)

    @property
    def files_ingested(self) -> int:
        return sum(f.status == STATUS_INGESTED for f in self.files)

    @property
    def files_unreadable(self) -> int:
        return sum(f.status == STATUS_UNREADABLE for f in self.files)

    @property
    def files_skipped(self) -> int:
        return sum(f.status == STATUS_SKIPPED for f in self.files)

    @property
    def totals(self) -> dict[str, int]:
        return {
            "files_found": self.files_found, "files_ingested": self.files_ingested,
            "files_unreadable": self.files_unreadable, "files_skipped": self.files_skipped,
            "rows_read": self.rows_read, "accepted": self.accepted, "duplicates": self.duplicates,
            "quarantined": self.quarantined, "cancellations": self.cancellations,
        }

    @property
    def revalidated_quarantined(self) -> int:
        return self.revalidated - self.revalidated_accepted - self.revalidated_duplicates

    def _revalidated_text(self) -> str:
        return (f"{self.revalidated_accepted} accepted, {self.revalidated_duplicates} duplicates, "
                f"{self.revalidated_quarantined} still quarantined")

    @property
    def undefined(self) -> dict[str, dict[str, int]]:
        """Accepted events whose customer or meter the catalogue does not define (not billed yet)."""
        return {"customers": dict(self.undefined_customers), "meters": dict(self.undefined_meters)}

    def to_dict(self) -> dict:
        """JSON-ready (instants as ISO-8601 strings); the totals are top-level keys."""
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "ingested_at": self.ingested_at.isoformat(),
            "max_event_age_days": self.max_event_age_days,
            **self.totals,
            "revalidated": self.revalidated, "revalidated_accepted": self.revalidated_accepted,
            "revalidated_duplicates": self.revalidated_duplicates,
            "revalidated_by_reason": dict(self.revalidated_by_reason), "requeue": list(self.requeue),
            "quarantine_by_reason": dict(self.quarantine_by_reason),
            "undefined": self.undefined,
            "event_dates": [d.isoformat() for d in self.event_dates],
            "files": [asdict(f) for f in self.files],
        }

    def summary(self) -> str:
        t = self.totals
        line = (f"ingest: {t['files_ingested']} files ingested, {t['files_unreadable']} unreadable, "
                f"{t['files_skipped']} skipped; {t['rows_read']} rows: {t['accepted']} accepted, "
                f"{t['duplicates']} duplicates, {t['quarantined']} quarantined")
        if self.revalidated:
            line += f"; {self.revalidated} re-validated from quarantine: {self._revalidated_text()}"
        return line

    def to_markdown(self, max_rows: int = 20) -> str:
        """The report: totals of every file, then the first `max_rows` rows of each list and how
        many more (bounded at any number of files or undefined ids)."""
        t = self.totals
        out = [
            "# Ingest report", "",
            f"as_of `{self.as_of.isoformat()}` · max_event_age_days {self.max_event_age_days}"
            + (f" · run `{self.run_id}`" if self.run_id else ""), "",
            "| files found | ingested | unreadable | skipped | rows read | accepted | duplicates | quarantined | cancellations |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {t['files_found']} | {t['files_ingested']} | {t['files_unreadable']} | {t['files_skipped']} | "
            f"{t['rows_read']} | {t['accepted']} | {t['duplicates']} | {t['quarantined']} | {t['cancellations']} |",
            "",
        ]
        if self.revalidated:
            by = ", ".join(f"{_md(r)} {n}" for r, n in sorted(self.revalidated_by_reason.items()))
            out += [f"Re-validated from quarantine: {self.revalidated} records ({by}): {self._revalidated_text()}.", ""]
        if self.quarantine_by_reason:
            out += ["## Quarantine by reason", "", "| reason | records |", "|---|---:|"]
            out += [f"| {_md(r)} | {n} |" for r, n in sorted(self.quarantine_by_reason.items())]
            out.append("")
        out += ["## Undefined", ""]
        if not (self.undefined_customers or self.undefined_meters):
            out += ["Every accepted event names a customer and a meter the catalogue defines.", ""]
        for title, d in (("customers", self.undefined_customers), ("meters", self.undefined_meters)):
            if d:
                out += [f"Events of {len(d)} undefined {title} (accepted, not billed until defined):", "",
                        "| id | events |", "|---|---:|"]
                top = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
                out += [f"| {_md(k)} | {v} |" for k, v in top[:max_rows]]
                if len(top) > max_rows:
                    out.append(f"| … {len(top) - max_rows:,} more | |")
                out.append("")
        done = [f for f in self.files if f.status != STATUS_SKIPPED]
        if done:
            out += ["## Files", "", "| file | format | rows | accepted | duplicates | quarantined | status |",
                    "|---|---|---:|---:|---:|---:|---|"]
            for f in done[:max_rows]:
                status = f.status + (f": {_md(f.error)}" if f.error else "")
                out.append(f"| {_md(f.source_file)} | {f.format or ''} | {f.rows_read} | {f.accepted} | "
                           f"{f.duplicates} | {f.quarantined} | {status} |")
            if len(done) > max_rows:
                out.append(f"| … {len(done) - max_rows:,} more files | | | | | | |")
            out.append("")
        return "\n".join(out)


def _md(s: str | None) -> str:
    return (s or "").replace("|", "\\|").replace("\n", " ")
