"""Deduplicate (SPEC §2): the first accepted event of a dedup key wins, per UTC event date.

The dedup key (`parse.dedup_key_sql`) is `u:` + the JSON array
`[customer_id, meter_api_name, unique_id, is_cancel]` when the record has a unique_id, else `c:`
+ `[customer_id, meter_api_name, event time (epoch µs), meter_value (9 places; null for
count/unique_count meters, whose value is ignored), sorted dimension pairs, is_cancel]`. It is
not stored in the events table: the keys of earlier runs' events are computed again from their
columns (`events_keys_sql`), which hold everything the key is made of.
The cancel flag is part of the key, so a cancellation is never a duplicate of the event it
cancels (but a second identical cancellation is a duplicate of the first).

"First" means: earlier in the events table (any earlier run) beats this run; within a run,
files in sorted path order (`file_seq`), then record order (`row_number`). Only partitions
(event dates) that the new events fall on are consulted, through the `seen` table.

These functions build SQL over names the caller has set up in one DuckDB connection:
`cand` (candidate events: parsed, valid), `seen(event_date, dedup_key)` (keys already taken).
"""

from __future__ import annotations

from transforms.ingest.parse import dedup_key_sql

SEEN_COLUMNS = "event_date DATE, dedup_key VARCHAR"


def create_seen_sql(seen: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {seen} ({SEEN_COLUMNS})"


_ORDER = "CAST(file_seq AS BIGINT) * 4294967296 + row_number"  # file order, then record order


def taken_sql(cand: str, seen: str) -> str:
    """(event_date, dedup_key) of the candidates whose key is already in `seen`: a semi-join of
    `seen` against the candidates (its hash table holds the group's candidates, bounded by the
    group size), never a hash table of all of `seen`, which grows with the run."""
    return f"""
SELECT DISTINCT s.event_date, s.dedup_key FROM {seen} s
WHERE s.event_date IN (SELECT DISTINCT event_date FROM {cand})
  AND EXISTS (SELECT 1 FROM {cand} k WHERE k.event_date = s.event_date AND k.dedup_key = s.dedup_key)"""


def firsts_sql(cand: str) -> str:
    """(event_date, dedup_key, first_order) of the keys that more than one candidate has.
    Duplicates are rare, so only those are ranked (a hash aggregate, which spills), instead of
    a window over every candidate."""
    return f"""
SELECT event_date, dedup_key, min({_ORDER}) AS first_order
FROM {cand} GROUP BY event_date, dedup_key HAVING count(*) > 1"""


def winners_sql(cand: str, taken: str, firsts: str) -> str:
    """Candidates that are the first of their key and whose key is not taken yet; `taken` and
    `firsts` are tables holding `taken_sql` and `firsts_sql` (made first, so that their hash
    tables are gone before the winners are written)."""
    order = _ORDER.replace("file_seq", "c.file_seq").replace("row_number", "c.row_number")
    return f"""
SELECT c.* FROM {cand} c
LEFT JOIN {firsts} f ON c.event_date = f.event_date AND c.dedup_key = f.dedup_key
WHERE (f.first_order IS NULL OR {order} = f.first_order)
  AND NOT EXISTS (SELECT 1 FROM {taken} s WHERE s.event_date = c.event_date AND s.dedup_key = c.dedup_key)"""


def remember_sql(seen: str, keys: str) -> str:
    """Take the keys of a relation with event_date, dedup_key (`events_keys_sql` of events files)."""
    return f"INSERT INTO {seen} SELECT CAST(event_date AS DATE), dedup_key FROM {keys}"


def events_keys_sql(events: str, carry: tuple[str, ...] = ()) -> str:
    """(event_date, dedup_key) of the rows of an events relation, computed from their columns
    exactly as the ingest computed them (needs the `valueless_meters` table of `parse.prepare`).

    An event's `unique_id` is the trimmed non-empty id or null, its `dimensions` MAP has its
    keys sorted, its `meter_value` is DECIMAL(38, 9) and its `event_time` the parsed instant:
    the inputs of `dedup_key_sql` as they were. (Files written by versions that stored a
    `dedup_key` column are read the same way; that column is ignored.) `carry`: more columns of
    `events` to keep beside them."""
    more = "".join(f"{c}, " for c in carry)
    return f"""
SELECT {more}CAST(event_date AS DATE) AS event_date, {dedup_key_sql('p_ts')} AS dedup_key
FROM (SELECT {more}event_date, customer_id, meter_api_name, unique_id AS uid, is_cancel,
             meter_value AS p_value, event_time AS p_ts, map_entries(dimensions) AS dims_kv
      FROM {events})"""


def events_sql(winners: str) -> str:
    """Winners in the events table's columns (SPEC §7), `event_date` last (the partition)."""
    return f"""
SELECT customer_id, meter_api_name, meter_value, event_time, unique_id,
  dims AS dimensions, is_cancel, source_file, row_number, ingested_at, event_date
FROM {winners}"""
