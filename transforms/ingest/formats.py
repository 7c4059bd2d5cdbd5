"""Raw event file formats (SPEC §2) and the field names each record may use."""

from __future__ import annotations

from dataclasses import dataclass

# canonical field -> the names a record may give it (snake_case first, then Amberflo's camelCase)
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer_id", "customerId"),
    "meter_api_name": ("meter_api_name", "meterApiName"),
    "meter_value": ("meter_value", "meterValue"),
    "meter_time_in_millis": ("meter_time_in_millis", "meterTimeInMillis"),
    "event_time": ("event_time",),
    "unique_id": ("unique_id", "uniqueId"),
    "dimensions": ("dimensions",),
}
SCALAR_FIELDS = ("customer_id", "meter_api_name", "meter_value", "meter_time_in_millis", "event_time", "unique_id")
KNOWN_NAMES = frozenset(n for names in FIELD_NAMES.values() for n in names)

CANCEL_DIMENSION = "meterbill_cancel"
DIMENSION_KEY_RE = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
# an id that would show as another one: a control (C0, C1, NUL), format (zero-width, bidi, BOM)
# or line/paragraph separator character anywhere, or whitespace at either end
BAD_IDENTIFIER_RE = r"^\s|\s$|[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
IDENTIFIER_FIELDS = ("customer_id", "meter_api_name", "unique_id")


@dataclass(frozen=True)
class Format:
    kind: str  # parquet | ndjson | json | csv
    gzip: bool

    @property
    def name(self) -> str:
        return self.kind + (".gz" if self.gzip else "")


_SUFFIXES = {".parquet": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}
SUPPORTED = "Parquet (.parquet), NDJSON (.ndjson, .jsonl), a JSON array (.json) or CSV (.csv), optionally .gz"


def detect_format(name: str) -> Format | None:
    """The format of a raw file from its name (case-insensitive); None if it is not one of SPEC §2's."""
    low = name.lower()
    gz = low.endswith(".gz")
    if gz:
        low = low[:-3]
    for suffix, kind in _SUFFIXES.items():
        if low.endswith(suffix):
            return Format(kind, gz)
    return None
