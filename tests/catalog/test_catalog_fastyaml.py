"""The column-wise YAML reader of the flat tables gives what LibYAML gives, or steps aside."""

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import fastyaml

M = object()

SCALARS = ["yes", "No", "on", "OFF", "y", "n", "null", "Null", "~", "true", "False", "2026-01-01",
           "2026-01-01T08:30:00Z", "2026-01-01 08:30:00", "2026-01-01T08:30:00+05:30", "010", "0x1F", "0o17",
           "1_000", "1:30", "12", "1.5", "1e3", "6.02e+23", ".5", "+5", "-5", ".inf", "a:b", "http://x.y/z?q=1",
           "Acme Inc.", "O'Brien", "a b", "a  b", "#x", "a #b", "a,b", "@x", "$5", "(x)", "x:", "-", "=", "<<",
           "", "cus_001", "Europe/Berlin", "billing@x.example", "a-b.c", "é", "a\\b", 'say "hi"', "[x]", "{x}"]


def quoted(s: str, how: str) -> str:
    if how == "plain":
        return s
    if how == "double":
        return json.dumps(s)
    return "'" + s.replace("'", "''") + "'"


COMMON = ["cus_001", "Acme Inc.", "Europe/Berlin", "billing@x.example", "2026-01-01", "2026-01-01T08:30:00Z",
          "yes", "null", "12", "1.5", "010", "a:b", "One Corp", "O'Brien", "(x)", "$5"]
scalar = st.tuples(st.one_of(st.sampled_from(COMMON), st.sampled_from(SCALARS)),
                   st.sampled_from(["plain", "double", "single"])).map(lambda t: quoted(*t))
keys = st.sampled_from(["customer_id", "customer_name", "timezone", "email", "start", "yes", "plan_id"])
record = st.lists(st.tuples(keys, st.one_of(
    scalar,
    st.lists(scalar, max_size=3).map(lambda xs: ("seq", xs)),
    st.lists(st.tuples(st.sampled_from(["segment", "tier", "a-b", "on"]), scalar), max_size=3,
             unique_by=lambda kv: kv[0]).map(lambda xs: ("map", xs)),
)), min_size=1, max_size=5, unique_by=lambda kv: kv[0])


def flow_value(v) -> str:
    if isinstance(v, tuple) and v[0] == "seq":
        return "[" + ", ".join(v[1]) + "]"
    if isinstance(v, tuple):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v[1]) + "}"
    return v


def render(records, style: str) -> str:
    out = []
    for rec in records:
        if style == "flow":
            out.append("- {" + ", ".join(f"{k}: {flow_value(v)}" for k, v in rec) + "}")
            continue
        for j, (k, v) in enumerate(rec):
            lead = "- " if j == 0 else "  "
            if style == "nested" and isinstance(v, tuple) and v[1]:
                out.append(f"{lead}{k}:")
                if v[0] == "seq":
                    out.extend(f"  - {x}" for x in v[1])
                else:
                    out.extend(f"    {a}: {x}" for a, x in v[1])
            else:
                out.append(f"{lead}{k}: {flow_value(v)}")
    return "\n".join(out) + "\n"


def as_records(n, cols):
    return [{k: v[i] for k, v in cols.items() if v[i] is not M} for i in range(n)]


TAKEN = {"fast": 0, "libyaml": 0}


@settings(max_examples=600, deadline=None)
@given(st.lists(record, min_size=1, max_size=4), st.sampled_from(["flow", "block", "nested"]))
def test_fast_reader_reads_what_libyaml_reads_or_steps_aside(records, style):
    text = render(records, style)
    try:
        expected = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        expected = None
    got = fastyaml.read(text, M)
    TAKEN["libyaml" if got is None else "fast"] += 1
    if got is None:
        return
    assert expected is not None, text
    assert as_records(*got) == expected, text


def test_the_property_test_took_the_fast_path_often():
    # the test above must not pass by stepping aside every time (run in the same module, after it)
    if sum(TAKEN.values()) == 0:
        pytest.skip("run with the property test")
    assert TAKEN["fast"] >= 100, TAKEN


@pytest.mark.parametrize("text", [
    # the shapes scripts write: one record a line, one field a line, nested one level
    '- {customer_id: c1, customer_name: "One, Inc", traits: {segment: smb}, tags: [a, b]}\n'
    "- {customer_id: c2, customer_name: 'Two''s', timezone: Europe/Berlin, start: 2026-01-01}\n",
    "# customers\n- customer_id: c1\n  customer_name: One Corp\n  traits:\n    segment: smb\n  ids:\n  - a\n  - b\n"
    "\n- customer_id: c2\n  customer_name: Two Ltd\n  end:\n  ids: [x]\n",
    "- customer_id: c1\n  ids:\n    - a\n    - b\n  start: 2026-01-01T08:30:00Z\n",
])
def test_fast_reader_takes_the_common_shapes(text):
    got = fastyaml.read(text, M)
    assert got is not None
    assert as_records(*got) == yaml.load(text, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize("text", [
    "- {customer_id: c1}  # a comment after a value\n",
    "---\n- {customer_id: c1}\n",
    "- &a {customer_id: c1}\n",
    '- {customer_id: "c\\u0031"}\n',
    "- customer_id: c1\n  traits:\n    segment:\n      deeper: x\n",
    "- customer_id: c1\n    customer_name: misindented\n",
    "[]\n",
])
def test_fast_reader_steps_aside_for_other_yaml(text):
    assert fastyaml.read(text, M) is None
