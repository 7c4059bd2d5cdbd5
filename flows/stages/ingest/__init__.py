"""The ingest stage: `<lake>/raw/**` -> `events`, `quarantine`, `ingest_files` (SPEC §2, §7).

`run_ingest` does the work; `IngestRun` is its steps, one module each (plan.py, revalidate.py,
groups.py with dedupe.py, commit.py), which the ingest flow (flows/ingest.py) wraps in coarse
Prefect tasks.

How a run goes
--------------
1. plan: take the lake's ingest lock; finish any interrupted commit (`Lake.recover_commits`);
   delete scratch folders of runs that died before committing; list raw files in sorted path
   order; hash each (sha256); a file whose hash is in `ingest_files` (or repeats an earlier
   file of this run) is skipped. A file whose size, mtime, ctime and inode are those recorded
   with its hash by an earlier run (`_state/raw_hashes.json`) keeps that hash without being
   read again: the landing zone is not re-read every hour (`known_hashes`). A path ingested
   before with other bytes is a new version: it replaces the old one in quarantine and
   ingest_files. The quarantined records to judge again are found (transforms/ingest/requeue.py:
   the clock-dependent reasons when the run's clock changes their verdict, and the reasons of
   `requeue`).
1b. revalidate: those records are replayed through the parse and rules of their source's format
   and deduplicated as a group of their own, before the new files (they were read first).
2. per batch of files (~256 MB): read each file in batches of ~200k records, normalize and
   parse in DuckDB, validate with Pandera (transforms/ingest); valid records are staged as
   candidate Parquet, rejected ones as quarantine Parquet, in the run's scratch folder. A file
   that fails to read is unreadable: what it had staged is dropped, one quarantine row
   (row_number null) records it. Then the batch's candidates are deduplicated in DuckDB against
   each other (file order, row order) and against the keys already taken (`seen`: events of
   earlier runs on the same UTC dates, loaded partition by partition, plus this run's earlier
   batches); the winners are staged. Progress: one line per file.
3. commit: the winners are written as one Parquet file per event-date partition, quarantine
   and ingest_files rows as one file each, all in scratch space; the quarantine and ingest_files
   files whose rows moved or were replaced are written again beside them; then `Lake.commit`
   moves them into the warehouse under a journal (a rewritten file is renamed over its old
   copy, which is atomic).

Crash safety (write order)
--------------------------
Nothing is written under `warehouse/<table>/` before step 3's `Lake.commit`. It first writes
and fsyncs `warehouse/.journal/ingest-<run>.json` listing every move, then renames in this order:
events files, the quarantine file, the rewritten quarantine files, the rewritten ingest_files
files, and last the ingest_files file (the record that the raw files are done), then deletes
the journal. So:
- a crash before the journal exists leaves every table as it was (the scratch folder is garbage,
  removed by the next run, which ingests the same files again from scratch);
- a crash after it is rolled *forward* by the next run before it plans (every staged file is
  still in scratch space, the journal says where it goes): the next run then sees the files in
  ingest_files and skips them. It can never ingest a file's events twice, nor count them as
  duplicates of themselves, nor leave quarantine rows without their ingest_files row.
Readers that look at `events` during those few renames may see new events before their
ingest_files rows; nothing sees ingest_files rows without their events.
"""

from flows.stages.ingest.files import check_age, requeue_reasons
from flows.stages.ingest.run import IngestRun, run_ingest
from transforms.ingest.report import FileResult, IngestReport

__all__ = ["FileResult", "IngestReport", "IngestRun", "check_age", "requeue_reasons", "run_ingest"]
