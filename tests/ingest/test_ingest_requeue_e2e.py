"""The trial's shape through the `meterbill` command: an ingest with a past `--as-of` quarantines
every later event as future_event; the next normal `run` (or a `backfill`) re-validates them and
bills every event, exactly as a lake ingested at the right clock from the start."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake
from flows.cli import main
from tests.e2e.conftest import CATALOG, write_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

UTC = dt.timezone.utc
JAN = dt.datetime(2026, 1, 1, tzinfo=UTC)
FEB = dt.datetime(2026, 2, 1, tzinfo=UTC)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _ev(cid: str, t: dt.datetime, value: int, uid: str) -> dict:
    return {"customer_id": cid, "meter_api_name": "api_calls", "meter_value": value, "meter_time_in_millis": _ms(t),
            "unique_id": uid}


# January: c1 240 calls (one every 3 h), c2 130 events of 2 calls (one every 5 h) = 260 calls;
# February: c1 20 calls, c2 10 calls
JAN_C1 = [_ev("c1", JAN + dt.timedelta(hours=3 * k), 1, f"c1-{k}") for k in range(240)]
JAN_C2 = [_ev("c2", JAN + dt.timedelta(hours=1 + 5 * k), 2, f"c2-{k}") for k in range(130)]
FEB_ALL = ([_ev("c1", FEB + dt.timedelta(hours=5 * k), 1, f"c1-feb-{k}") for k in range(20)]
           + [_ev("c2", FEB + dt.timedelta(hours=7 * k), 1, f"c2-feb-{k}") for k in range(10)])


def _lake(root) -> str:
    bad = {"meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": _ms(JAN), "unique_id": "bad"}
    write_lake(root, events=JAN_C1[:120] + [bad], catalog=CATALOG)  # raw/batch1.ndjson
    rows = JAN_C1[120:] + JAN_C2
    (root / "raw" / "batch2.csv").write_text(
        "customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\n"
        + "".join(f"{r['customer_id']},api_calls,{r['meter_value']},{r['meter_time_in_millis']},{r['unique_id']}\n"
                  for r in rows))
    pl.DataFrame(FEB_ALL).write_parquet(root / "raw" / "batch3.parquet")
    return str(root)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    o = capsys.readouterr()
    return code, o.out, o.err


def _invoices(lake) -> dict:
    return {(r["customer_id"], f"{r['period_start']:%Y-%m}"): (r["status"], r["usage_amount"], r["total_due"])
            for r in Lake(lake).read("invoices").iter_rows(named=True)}


HAND = {
    # c1, basic: 240 × 0.01 = 2.40 + the 10.00 base fee
    ("c1", "2026-01"): ("final", Decimal("2.40"), Decimal("12.40")),
    # c2, pro: 260 calls: the first 100 for the flat 5.00, 160 × 0.02 = 3.20
    ("c2", "2026-01"): ("final", Decimal("8.20"), Decimal("8.20")),
    ("c1", "2026-02"): ("draft", Decimal("0.20"), Decimal("10.20")),
    ("c2", "2026-02"): ("draft", Decimal("5.00"), Decimal("5.00")),
}


def test_an_ingest_with_a_past_as_of_loses_no_event_to_the_next_run(tmp_path, capsys):
    ref = _lake(tmp_path / "ref")
    assert cli(capsys, "run", "--lake", ref, "--as-of", "2026-02-10T00:00:00Z", "--no-deliver")[0] == 0
    assert _invoices(ref) == HAND

    lake = _lake(tmp_path / "lake")
    code, out, err = cli(capsys, "ingest", "--lake", lake, "--as-of", "2026-01-10T00:00:00Z")
    assert code == 0, err
    q = Lake(lake).read("quarantine")
    # c1 every 3 h from Jan 1: 73 events up to Jan 10 00:00 are in, 167 are future; c2 every 5 h from
    # 01:00: 44 are in, 86 future; and all 30 of February
    assert q.filter(pl.col("reason") == "future_event").height == 167 + 86 + 30
    code, out, err = cli(capsys, "run", "--lake", lake, "--as-of", "2026-02-10T00:00:00Z", "--no-deliver")
    assert code == 0, err
    assert _invoices(lake) == HAND
    assert Lake(lake).read("quarantine").filter(pl.col("row_number").is_not_null()).height == 1  # the bad row
    assert Lake(lake).read("events").height == Lake(ref).read("events").height == 240 + 130 + 30
    files = Lake(lake).read("ingest_files").sort("source_file")
    assert files.select("source_file", "rows_read", "accepted", "duplicates", "quarantined").rows() == \
        Lake(ref).read("ingest_files").sort("source_file").select(
            "source_file", "rows_read", "accepted", "duplicates", "quarantined").rows()


def test_a_backfill_picks_up_what_a_past_as_of_quarantined(tmp_path, capsys):
    lake = _lake(tmp_path / "lake")
    assert cli(capsys, "ingest", "--lake", lake, "--as-of", "2026-01-10T00:00:00Z")[0] == 0
    code, out, err = cli(capsys, "backfill", "--lake", lake, "--from", "2026-01-01", "--to", "2026-02-10")
    assert code == 0, err
    assert _invoices(lake) == HAND
    assert Lake(lake).read("events").height == 400


def test_ingest_requeue_on_the_command_line(tmp_path, capsys):
    lake = _lake(tmp_path / "lake")
    code, out, err = cli(capsys, "ingest", "--lake", lake, "--as-of", "2026-02-10", "--requeue", "bogus")
    assert code != 0 and "Traceback" not in err
    assert "--requeue: 'bogus' is not a quarantine reason (one of missing_field, bad_type, bad_identifier," in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "ingest", "--lake", lake, "--as-of", "2026-01-10T00:00:00Z")
    assert code == 0, err
    code, out, err = cli(capsys, "ingest", "--lake", lake, "--as-of", "2026-02-10T00:00:00Z",
                         "--requeue", "missing_field,bad_type", "--requeue", "too_old")
    assert code == 0, err
    assert "revalidated 284" in out and "revalidated_accepted 283" in out
