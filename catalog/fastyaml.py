"""Column-wise reading of a flat table's YAML file (customers, subscriptions, credits).

LibYAML builds a Python event and node per scalar, too slow for a table of 100,000 customers
(bench/notes.md). Flat tables are lists of flat records, which scripts write in one of two
shapes, one record a line or one field a line:

    - {customer_id: c1, customer_name: "One Corp", traits: {segment: smb}}
    - customer_id: c2
      customer_name: Two Ltd
      traits:
        segment: smb
      product_item_ids: [api, tokens]      (or the items one a line: "  - api")

`read` recognises those lines with Polars regular expressions over the whole file at once and
returns the same Python values as `yaml.load(..., CSafeLoader)`: quoted scalars are strings, plain
scalars are resolved by PyYAML's own resolver and constructor (once per distinct text), so `yes`
is still a boolean and `2026-01-01` a date. A file with any other line (comments after a value,
anchors, tags, escapes, multi-line scalars, deeper nesting, `---`) returns None and is read by
LibYAML; the result never depends on which reader read it.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import yaml

# A plain word: no quotes, flow indicators, '#', or leading indicator; ':' only inside a word.
_W = r"[A-Za-z0-9_$(/+](?:[A-Za-z0-9_$()/+.@:-]*[A-Za-z0-9_$()/+.@-])?"
_PLAIN = rf"{_W}(?: {_W})*"
_DQ = r'"[^"\\]*"'
_SQ = r"'(?:[^'\n]|'')*'"
_SCALAR = rf"(?:{_PLAIN}|{_DQ}|{_SQ})"
_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_FSEQ = rf"\[ *(?:{_SCALAR}(?: *, *{_SCALAR})* *)?\]"
_FMAP = rf"\{{ *(?:{_W}: +{_SCALAR}(?: *, *{_W}: +{_SCALAR})* *)?\}}"
_VALUE = rf"(?:{_FSEQ}|{_FMAP}|{_SCALAR})"
_ENTRY = rf"{_KEY}: +{_VALUE}"

SKIP, FLOW, START, CONT, NMAP, NSEQ = range(6)
_PATTERNS = [
    (SKIP, r"^ *(?:#.*)?$"),
    (FLOW, rf"^- \{{ *{_ENTRY}(?: *, *{_ENTRY})* *\}} *$"),
    (START, rf"^- {_KEY}:(?: +{_VALUE})? *$"),
    (CONT, rf"^  {_KEY}:(?: +{_VALUE})? *$"),
    (NMAP, rf"^    {_W}: +{_SCALAR} *$"),
    (NSEQ, rf"^(?:  |    )- {_SCALAR} *$"),
]

_resolver = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"


def _plain(text: str) -> Any:
    """A plain scalar as PyYAML reads it (null, bool, int, float, timestamp, or the text)."""
    if not _resolver.yaml_implicit_resolvers.get(text[0]):
        return text
    tag = _resolver.resolve(yaml.ScalarNode, text, (True, False))
    if tag == _STR:
        return text
    return yaml.SafeLoader("").construct_object(yaml.ScalarNode(tag, text))


def _scalar(token: str) -> Any:
    if token == "":
        return None
    if token[0] == '"':
        return token[1:-1]
    if token[0] == "'":
        return token[1:-1].replace("''", "'")
    return _plain(token)


_RE_SCALAR = None
_RE_PAIR = None


def _value(token: str) -> Any:
    """A field's token: a scalar, a flow sequence of scalars, or a flow mapping of scalars."""
    import re

    global _RE_SCALAR, _RE_PAIR
    if _RE_SCALAR is None:
        _RE_SCALAR = re.compile(_SCALAR)
        _RE_PAIR = re.compile(rf"({_W}): +({_SCALAR})")
    if token[:1] == "[":
        return [_scalar(m.group(0)) for m in _RE_SCALAR.finditer(token[1:-1])]
    if token[:1] == "{":
        return {_scalar(m.group(1)): _scalar(m.group(2)) for m in _RE_PAIR.finditer(token[1:-1])}
    return _scalar(token)


class Unsupported(Exception):
    """The text uses YAML this reader does not handle: read it with LibYAML."""


def read(text: str, missing: Any) -> tuple[int, dict[str, list]] | None:
    """(number of records, {field: values in record order, `missing` where a record has no such field}),
    or None when the file is not in the two shapes (LibYAML reads it)."""
    try:
        return _read(text, missing)
    except Unsupported:
        return None


def _read(text: str, missing: Any) -> tuple[int, dict[str, list]]:
    if "\t" in text or "\r" in text.replace("\r\n", "\n"):
        raise Unsupported
    lines = pl.Series("line", text.replace("\r\n", "\n").split("\n"), dtype=pl.String)
    kind = pl.when(pl.col("line").str.contains(_PATTERNS[0][1])).then(pl.lit(SKIP))
    for k, pat in _PATTERNS[1:]:
        kind = kind.when(pl.col("line").str.contains(pat)).then(pl.lit(k))
    df = (pl.DataFrame(lines).with_row_index("ln").with_columns(kind=kind.otherwise(pl.lit(-1)).cast(pl.Int8))
          .filter(pl.col("kind") != SKIP))
    if df.is_empty():
        return 0, {}
    if (df["kind"] == -1).any() or df["kind"][0] not in (FLOW, START):
        raise Unsupported
    is_rec = pl.col("kind").is_in([FLOW, START])
    is_key = pl.col("kind").is_in([START, CONT])
    kv = pl.col("line").str.extract_groups(rf"^(?:- |  )({_KEY}):(?: +(.*?))? *$")
    df = df.with_columns(
        rec=is_rec.cast(pl.Int64).cum_sum() - 1,
        rec_kind=pl.when(is_rec).then(pl.col("kind")).forward_fill(),
        key=pl.when(is_key).then(kv.struct.field("1")),
        token=pl.when(is_key).then(kv.struct.field("2")),
    ).with_columns(
        parent=pl.col("key").forward_fill(),
        parent_token=pl.when(is_key).then(pl.col("token").fill_null("")).forward_fill(),
        prev_kind=pl.col("kind").shift(1),
    )
    nested = df.filter(pl.col("kind").is_in([NMAP, NSEQ]))
    bad = df.filter(
        (pl.col("kind").is_in([CONT, NMAP, NSEQ]) & (pl.col("rec_kind") != START))
        | (pl.col("kind").is_in([NMAP, NSEQ]) & (pl.col("parent_token") != ""))
        | ((pl.col("kind") == NMAP) & ~pl.col("prev_kind").is_in([START, CONT, NMAP]))
        | ((pl.col("kind") == NSEQ) & ~pl.col("prev_kind").is_in([START, CONT, NSEQ])))
    if not bad.is_empty():
        raise Unsupported
    n = int(df["rec"].max()) + 1
    # scalar and flow-collection fields: one row per (record, key, token)
    flow = (df.filter(pl.col("kind") == FLOW)
            .select("rec", entry=pl.col("line").str.extract(r"^- \{(.*)\} *$", 1).str.extract_all(_ENTRY))
            .explode("entry")
            .select("rec", kv=pl.col("entry").str.splitn(": ", 2))  # a key has no ':'
            .select("rec", key=pl.col("kv").struct.field("field_0"),
                    token=pl.col("kv").struct.field("field_1").str.strip_chars(" ")))
    block = df.filter(is_key).select("rec", "key", pl.col("token").fill_null(""))
    entries = pl.concat([flow, block])
    if entries["key"].null_count() or entries.select(pl.struct("rec", "key").is_duplicated().any()).item():
        raise Unsupported  # a key twice in a record (YAML keeps the last): left to LibYAML
    keys = entries["key"].unique().to_list()
    if "rec" in keys or any(_plain(k) != k for k in keys):  # a key PyYAML reads as a boolean or null (`yes:`)
        raise Unsupported
    wide = entries.pivot(on="key", index="rec", values="token", aggregate_function="first").sort("rec")
    if wide.height != n:
        raise Unsupported
    columns = {k: _column(wide[k], missing) for k in keys}
    if not nested.is_empty():
        _nested(nested, columns, n, missing)
    return n, columns


_RESOLVED_FIRST = "".join(sorted(k for k in _resolver.yaml_implicit_resolvers if k))


def _column(tokens: pl.Series, missing: Any) -> list:
    """A field's tokens as Python values: quotes stripped over the whole column; the plain scalars
    PyYAML may read as something else than text, and flow collections, converted once per distinct token."""
    t = pl.col("t")
    frame = pl.DataFrame({"t": tokens}).select(
        text=pl.when(t.str.starts_with('"')).then(t.str.slice(1, t.str.len_chars() - 2))
        .when(t.str.starts_with("'")).then(t.str.slice(1, t.str.len_chars() - 2).str.replace_all("''", "'", literal=True))
        .otherwise(t),
        convert=(t == "") | t.str.contains("^[" + _RESOLVED_FIRST.replace("-", "").replace("[", "") + r"\[{-]"),
    )
    values = frame["text"].to_list()
    if tokens.null_count():
        values = [missing if v is None else v for v in values]
    todo = frame["convert"].arg_true().to_list()
    if todo:
        raw = tokens.to_list()
        conv = {tok: _value(tok) for tok in {raw[i] for i in todo}}
        for i in todo:
            values[i] = conv[raw[i]]
    return values


def _nested(nested: pl.DataFrame, columns: dict[str, list], n: int, missing: Any) -> None:
    """Fields written one level deeper, a mapping (`    key: value`) or a sequence (`  - item`)."""
    import re

    pair = re.compile(rf"^    ({_W}): +({_SCALAR}) *$")
    item = re.compile(rf"^( *)- ({_SCALAR}) *$")
    groups: dict[tuple[int, str], Any] = {}
    indent: dict[tuple[int, str], int] = {}
    for rec, parent, kind, line in nested.select("rec", "parent", "kind", "line").iter_rows():
        g = (rec, parent)
        if kind == NMAP:
            m = pair.match(line)
            key = _scalar(m.group(1))
            if not isinstance(key, str):
                raise Unsupported
            d = groups.setdefault(g, {})
            if not isinstance(d, dict):
                raise Unsupported
            d[key] = _scalar(m.group(2))
        else:
            m = item.match(line)
            if indent.setdefault(g, len(m.group(1))) != len(m.group(1)):
                raise Unsupported
            seq = groups.setdefault(g, [])
            if not isinstance(seq, list):
                raise Unsupported
            seq.append(_scalar(m.group(2)))
    for (rec, parent), value in groups.items():
        columns.setdefault(parent, [missing] * n)[rec] = value
