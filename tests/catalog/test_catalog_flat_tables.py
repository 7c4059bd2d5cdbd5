"""Customers, subscriptions and credits read the same and fail the same in YAML, CSV and Parquet."""

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.catalog.conftest import BASE, problems, write

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.catalog_gen import write_catalog  # noqa: E402


def _rows(cat):
    from catalog.config import to_utc

    tz = {c: m.timezone for c, m in cat.customers.items()}
    return ({k: m.model_dump() for k, m in cat.customers.items()},
            {k: (m.customer_id, m.plan_id, to_utc(m.start, tz[m.customer_id]), m.end)
             for k, m in cat.subscriptions.items()},
            {k: (m.customer_id, m.amount, m.currency, to_utc(m.effective_at, tz[m.customer_id]),
                 m.expires_at and to_utc(m.expires_at, tz[m.customer_id]), m.priority, m.product_item_ids)
             for k, m in cat.credits.items()})


def test_the_generated_catalogue_is_the_same_in_yaml_csv_and_parquet(tmp_path):
    from catalog import load_catalog

    loaded = {fmt: _rows(load_catalog(write_catalog(tmp_path / fmt, customers=2_000, fmt=fmt, seed=5)))
              for fmt in ("yaml", "csv", "parquet")}
    assert loaded["yaml"] == loaded["csv"] == loaded["parquet"]
    customers, subs, credits = loaded["yaml"]
    assert (len(customers), len(subs), len(credits)) == (2_000, 2_000, 400)
    assert customers["cus_00000"]["traits"] in ({"segment": s} for s in ("smb", "mid-market", "enterprise"))
    starts = {s[2] for s in subs.values()}
    assert dt.datetime(2026, 1, 1, 8, 30, tzinfo=dt.timezone.utc) in starts  # an instant stays that instant
    assert all(isinstance(c[1], Decimal) for c in credits.values())


def test_the_column_rules_name_every_field_of_the_record_models():
    from catalog.config import TABLES
    from catalog.flat import RULES

    for table, rules in RULES.items():
        assert list(rules) == list(TABLES[table][0].model_fields), table


def test_an_empty_cell_is_an_absent_field_in_csv_and_parquet(tmp_path):
    from catalog import load_catalog

    text = 'subscription_id,customer_id,plan_id,start,end\ns1,c1,basic,2026-01-01,""\ns2,c2,basic,2026-01-01,\n'
    for fmt in ("csv", "parquet"):
        folder = write(tmp_path / fmt, {"subscriptions.yaml": None})
        if fmt == "csv":
            (folder / "subscriptions.csv").write_text(text)
        else:  # a text column holding "" where the end is absent
            pl.read_csv(text.encode(), infer_schema=False).with_columns(end=pl.lit("")).write_parquet(
                folder / "subscriptions.parquet")
        cat = load_catalog(folder)
        assert [s.end for s in cat.subscriptions.values()] == [None, None], fmt


def test_flat_table_models_are_built_when_asked_for(tmp_path):
    from catalog import load_catalog
    from catalog.config import Customer
    from catalog.flat import FlatTable

    cat = load_catalog(write(tmp_path, {}))
    assert isinstance(cat.customers, FlatTable)
    assert list(cat.customers) == ["c1", "c2"] and "c1" in cat.customers and "c9" not in cat.customers
    c1 = cat.customers["c1"]
    assert c1 == Customer(customer_id="c1", customer_name="One Corp", timezone="Europe/Berlin")
    assert cat.customers["c1"] is c1
    assert cat.customers["c2"].timezone == "UTC" and cat.customers["c2"].traits == {}
    assert cat.timezone("c1") == "Europe/Berlin" and cat.timezone("c9") == "UTC"
    assert [s.start for s in cat.subscriptions.values()] == [dt.date(2026, 1, 1)] * 2
    with pytest.raises(KeyError):
        cat.customers["c9"]


CUSTOMERS_CSV = """\
customer_id,customer_name,timezone,traits,phone
c1,One Corp,Europe/Berlin,"{""segment"": ""smb""}",
c2,,UTC,,
c3,Three,Mars/Olympus,,
c1,One Again,UTC,,
c4,Four,UTC,"{""vip"": 1}",
c5,Five,UTC,,+49 30 1234
"""
SUBSCRIPTIONS_CSV = """\
subscription_id,customer_id,plan_id,start,end
s1,c1,basic,2026-01-01,
s2,c9,basic,2026-01-01,
s3,c5,basic,not-a-date,
s4,c5,basic,2026-03-01,2026-02-01
s5,c5,basic,2026-02-15T00:00:00Z,
"""
CREDITS_CSV = """\
grant_id,customer_id,amount,currency,effective_at,priority,product_item_ids
g1,c1,-5,USD,2026-01-01,,
g2,c1,1.0000000001,USD,2026-01-01,first,
g3,c1,5,XXX,2026-01-01,,api|nope
"""

EXPECTED = [
    "catalog/customers.F: record 2 (customer_id=c2): customer_name: Field required",
    "catalog/customers.F: record 3 (customer_id=c3): timezone: unknown IANA time zone 'Mars/Olympus'",
    "catalog/customers.F: record 4 (customer_id=c1): customer_id: duplicate customer_id 'c1'",
    "catalog/customers.F: record 5 (customer_id=c4): traits.vip: Input should be a valid string",
    "catalog/customers.F: record 6 (customer_id=c5): phone: Extra inputs are not permitted",
    "catalog/subscriptions.F: record 3 (subscription_id=s3): start: not a date or an ISO-8601 instant: 'not-a-date'",
    "catalog/credits.F: record 1 (grant_id=g1): amount: must be ≥ 0",
    "catalog/credits.F: record 2 (grant_id=g2): amount: 1.0000000001 has more than 9 decimal places",
    "catalog/credits.F: record 2 (grant_id=g2): priority: Input should be a valid integer",
    "catalog/subscriptions: record 2 (subscription_id=s2): customer_id: unknown customer 'c9'",
    "catalog/subscriptions: record 4 (subscription_id=s4): end: must be after start",
    "catalog/subscriptions: subscription_id=s4: start: overlaps subscription s5 of customer c5",
    "catalog/credits: record 3 (grant_id=g3): currency: unknown currency 'XXX'",
    "catalog/credits: record 3 (grant_id=g3): product_item_ids: unknown product item 'nope'",
]


def _yaml(csv_text: str, table: str) -> str:
    """The CSV's records as YAML, one record a line (values quoted as text, lists and maps as YAML)."""
    import json

    out = []
    for r in pl.read_csv(csv_text.encode(), infer_schema=False).iter_rows(named=True):
        fields = []
        for k, v in r.items():
            if v is None:
                continue
            if k == "traits":
                fields.append(f"{k}: {{{', '.join(f'{a}: {b}' for a, b in json.loads(v).items())}}}")
            elif k == "product_item_ids":
                fields.append(f"{k}: [{', '.join(v.split('|'))}]")
            elif k in ("start", "end", "effective_at"):
                fields.append(f"{k}: {v}")
            else:
                fields.append(f"{k}: {json.dumps(v)}")
        out.append("- {" + ", ".join(fields) + "}")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("fmt", ["yaml", "csv", "parquet"])
def test_flat_table_problems_name_file_record_and_field_in_every_format(tmp_path, fmt):
    tables = {"customers": CUSTOMERS_CSV, "subscriptions": SUBSCRIPTIONS_CSV, "credits": CREDITS_CSV}
    files: dict = {f"{t}.yaml": None for t in tables}
    for t, text in tables.items():
        if fmt == "yaml":
            files[f"{t}.yaml"] = _yaml(text, t)
        elif fmt == "csv":
            files[f"{t}.csv"] = text
        else:
            buf = tmp_path / f"{t}.parquet.tmp"
            pl.read_csv(text.encode(), infer_schema=False).write_parquet(buf)
            files[f"{t}.parquet"] = buf.read_bytes()
    assert problems(write(tmp_path / "catalog", files)) == [p.replace(".F:", f".{fmt}:") for p in EXPECTED]


def test_a_wrong_type_in_yaml_is_named_like_pydantic_names_it(tmp_path):
    cat = write(tmp_path, {"customers.yaml": """
        - {customer_id: 123, customer_name: One}
        - {customer_id: c2, customer_name: yes, email: null}
        - just a string
        - {customer_id: c3, customer_name: Three, timezone: null}
    """})
    assert problems(cat)[:4] == [
        "catalog/customers.yaml: record 1 (customer_id=123): customer_id: Input should be a valid string",
        "catalog/customers.yaml: record 2 (customer_id=c2): customer_name: Input should be a valid string",
        "catalog/customers.yaml: record 3: must be a mapping of field: value",
        "catalog/customers.yaml: record 4 (customer_id=c3): timezone: Input should be a valid string",
    ]


def test_a_flat_file_with_thousands_of_problems_prints_the_first_hundred_and_a_count(tmp_path):
    rows = "".join(f"c{i},Customer {i},Nowhere/{i}\n" for i in range(1, 251))
    cat = write(tmp_path, {"customers.yaml": None, "customers.csv": "customer_id,customer_name,timezone\n" + rows,
                           "subscriptions.yaml": "[]"})
    p = problems(cat)
    assert len(p) == 101
    assert p[0] == "catalog/customers.csv: record 1 (customer_id=c1): timezone: unknown IANA time zone 'Nowhere/1'"
    assert p[-1] == "catalog/customers.csv: … and 150 more problems in this file"
