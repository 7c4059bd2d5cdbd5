"""Every warehouse table's declared key (catalog/schemas.py KEYS) is unique and not null, on a lake
made by `meterbill demo` (once per test session): dbt's unique and not_null tests of every model."""

from __future__ import annotations

import polars as pl
import pytest

from catalog import Lake
from catalog.schemas import KEYS, NULLABLE_KEY_COLUMNS, SCHEMAS, dims_key_expr

AS_OF = "2026-11-27T00:00:00Z"
# `meterbill demo` records alerts without delivering them (--no-deliver): no delivery attempts
EMPTY_IN_THE_DEMO = {"deliveries"}


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory, prefect_harness) -> Lake:
    """20 days × 300 events a day of the sample catalogue, through the whole pipeline."""
    from flows.cli import main

    lake = tmp_path_factory.mktemp("keys") / "lake"
    code = main(["demo", "--lake", str(lake), "--days", "20", "--events-per-day", "300", "--as-of", AS_OF])
    assert code == 0, "meterbill demo failed: see the captured output above"
    return Lake(lake)


def test_every_table_has_a_declared_key_of_its_own_columns():
    assert set(KEYS) == set(SCHEMAS)
    for table, key in KEYS.items():
        assert key and len(set(key)) == len(key) and set(key) <= set(SCHEMAS[table]), table
        assert NULLABLE_KEY_COLUMNS.get(table, set()) <= set(key), table


@pytest.mark.parametrize("table", sorted(KEYS))
def test_the_declared_key_is_unique_and_not_null_on_the_demo_lake(demo_lake, table):
    df = demo_lake.read(table)
    if table in EMPTY_IN_THE_DEMO:
        assert df.height == 0
        return
    assert df.height > 0, f"the demo lake has no {table}: this test would judge nothing"
    key = KEYS[table]
    nullable = NULLABLE_KEY_COLUMNS.get(table, set())
    nulls = {c: df[c].null_count() for c in key if c not in nullable and df[c].null_count()}
    assert nulls == {}, f"{table}: null key columns {nulls}"
    # a dimension map is compared through its canonical text; a null is a value of its own here
    keyed = df.select(pl.when(pl.col(c).is_null()).then(None).otherwise(dims_key_expr(c)).alias(c)
                      if isinstance(df.schema[c], pl.Map) else pl.col(c) for c in key)
    dup = keyed.filter(keyed.is_duplicated())
    assert dup.height == 0, f"{table}: {dup.height} rows share a key, e.g. {dup.head(3).to_dicts()}"
