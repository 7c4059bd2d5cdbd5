"""Names from files (paths, dimension keys, customer ids) never break a query or write outside the lake."""

from __future__ import annotations

import json
import os

import polars as pl

from tests.ingest.conftest import T0, event, events, files, ingest, land, ndjson, parquet_bytes, quarantine

EVIL = "x'); DROP TABLE events; --"


def _tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def test_hostile_file_names(lake, tmp_path):
    outside = _tree(tmp_path)
    names = [
        "it's; DROP TABLE x; --.json",
        'we"ird\\name.csv',
        "a..b/x..%2F..%2F..%2Fescape.ndjson",
        "ünï cødé 'quoted'.parquet",
        "new\nline.ndjson",
    ]
    land(lake, names[0], json.dumps([event(unique_id="1")]))
    land(lake, names[1], f"customer_id,meter_api_name,meter_value,meter_time_in_millis,unique_id\nc1,api_calls,1,{T0},2\n")
    land(lake, names[2], ndjson(event(unique_id="3")))
    land(lake, names[3], parquet_bytes(pl.DataFrame({
        "customer_id": ["c1"], "meter_api_name": ["api_calls"], "meter_value": [1.0],
        "meter_time_in_millis": [T0], "unique_id": ["4"]})))
    land(lake, names[4], ndjson(event(unique_id="5")))
    rep = ingest(lake)
    assert rep.files_ingested == 5 and rep.accepted == 5
    stored = sorted(files(lake)["source_file"].to_list())
    assert stored == sorted(os.path.normpath(n).replace(os.sep, "/") for n in names)
    assert sorted(set(events(lake)["source_file"])) == stored
    # nothing was written anywhere but the warehouse
    after = _tree(tmp_path)
    new = {p for p in after - outside if not p.startswith(os.path.join("lake", "warehouse"))}
    assert new == {os.path.join("lake", "raw", os.path.normpath(n)) for n in names}


def test_hostile_dimension_keys(lake):
    land(lake, "a.csv", f'customer_id,meter_api_name,meter_value,meter_time_in_millis,"{EVIL.replace(chr(34), chr(34) * 2)}",ok\n'
                        f"c1,api_calls,1,{T0},v,1\nc1,api_calls,2,{T0},,2\n")
    land(lake, "b.ndjson", ndjson(event(dimensions={EVIL: "v"}), event(dimensions={'a"b': "v"}, ms=T0 + 1)))
    land(lake, "c.parquet", parquet_bytes(pl.DataFrame({
        "customer_id": ["c1", "c1"], "meter_api_name": ["api_calls"] * 2, "meter_value": [1.0, 2.0],
        "meter_time_in_millis": [T0, T0 + 1], "dimensions": [{EVIL: "v", "ok": "1"}, {EVIL: None, "ok": "2"}]})))
    ingest(lake)
    q = quarantine(lake)
    assert q.select("source_file", "row_number", "reason").rows() == [
        ("a.csv", 1, "bad_dimension"), ("b.ndjson", 1, "bad_dimension"), ("b.ndjson", 2, "bad_dimension"),
        ("c.parquet", 1, "bad_dimension")]
    assert EVIL in q["detail"][0] and json.loads(q["raw"][0])[EVIL] == "v"
    assert events(lake).select("source_file", "dimensions").rows() == [
        ("a.csv", {"ok": "2"}), ("c.parquet", {"ok": "2"})]


def test_hostile_customer_ids_are_data(lake):
    ids = [EVIL, "../../etc/passwd", "'; SELECT 1; --", 'a"b', "c1"]
    land(lake, "a.ndjson", ndjson(*[event(cid=c, ms=T0 + i) for i, c in enumerate(ids)]))
    rep = ingest(lake)
    assert events(lake)["customer_id"].to_list() == ids
    assert rep.undefined_customers == {c: 1 for c in sorted(ids[:4])}
    assert EVIL in rep.to_markdown()


def test_symlinks_out_of_raw_are_not_followed(lake, tmp_path):
    secret = tmp_path / "secret.ndjson"
    secret.write_text(ndjson(event(cid="c2")))
    (lake.raw_dir / "link.ndjson").symlink_to(secret)
    inside = lake.raw_dir / "real.ndjson"
    inside.write_text(ndjson(event()))
    (lake.raw_dir / "alias.ndjson").symlink_to(inside)
    ingest(lake)
    assert sorted(files(lake)["source_file"]) == ["alias.ndjson"]  # same bytes as real.ndjson: skipped
