"""A damaged warehouse file is named, with what to do (SPEC §8), by the lake's own readers."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake
from catalog.schemas import conform


@pytest.fixture
def lake(tmp_path):
    lk = Lake(tmp_path / "lake")
    lk.write_tables({"invoices": conform("invoices", pl.DataFrame({"invoice_id": ["i1"], "total_due": [Decimal(1)]})),
                     "reconciliation": conform("reconciliation", pl.DataFrame({"customer_id": ["c1"]}))})
    lk.write("events", pl.DataFrame({"customer_id": ["c1"]}).with_columns(event_date=pl.lit("2026-01-05").str.to_date()))
    return lk


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_reading_a_damaged_file_names_it_relative_to_the_lake_with_what_to_do(lake, how):
    f = lake.warehouse_dir / "invoices" / "part-0.parquet"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"not parquet" * 10, "empty": b""}[how])
    with pytest.raises(Exception) as e:
        lake.read("invoices")
    msg = str(e.value)
    assert msg.startswith("warehouse/invoices/part-0.parquet is damaged ("), msg
    assert msg.endswith("restore it from a backup (bill reads final invoices back and never recomputes them)"), msg
    assert "\n" not in msg
    # the other tables read as before
    assert lake.read("reconciliation")["customer_id"].to_list() == ["c1"]


def test_a_damaged_partition_file_is_named_with_its_partition(lake):
    f = next((lake.warehouse_dir / "events").rglob("*.parquet"))
    f.write_bytes(b"garbage")
    with pytest.raises(Exception) as e:
        lake.read("events")
    assert str(e.value).startswith("warehouse/events/event_date=2026-01-05/part-0.parquet is damaged (")
    assert "restore it from a backup" in str(e.value)


def test_a_damaged_file_of_a_table_rebuilt_by_every_bill_says_so(lake):
    f = lake.warehouse_dir / "reconciliation" / "part-0.parquet"
    f.write_bytes(b"garbage")
    with pytest.raises(Exception) as e:
        lake.read("reconciliation")
    assert str(e.value).endswith("delete it and run `meterbill bill` (every bill makes it again)")
