"""The meter types of SPEC §4 and their families are declared once (catalog/meter_types.py): every
module reads its sets from that table, and none spells a set of type names of its own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# SPEC §4, transcribed: the eleven meter types
SPEC_TYPES = ["sum", "count", "max", "min", "avg", "latest", "unique_count",
              "running_total", "high_watermark", "event_duration", "weighted_sum"]

# Literal collections of type names outside the table that are not a family of the table: the
# generator's mix of synthetic meters.
NOT_A_FAMILY = {("flows/stages/generate.py", "MIX")}


def test_every_type_of_spec_4_is_in_the_table_and_the_catalogue_takes_exactly_those():
    from catalog.config import Meter
    from catalog.meter_types import METER_TYPES

    assert list(METER_TYPES) == SPEC_TYPES
    needs = {"unique_count": {"unique_dimensions": ["user"]}, "event_duration": {"resource_dimensions": ["vm"]}}
    for t in SPEC_TYPES:
        assert Meter(meter_api_name="m", type=t, **needs.get(t, {})).type == t
    with pytest.raises(ValueError, match="Input should be 'sum', 'count', 'max'"):
        Meter(meter_api_name="m", type="median")


def test_the_families_say_what_spec_says():
    from catalog import meter_types as mt

    # §4: values of count and unique_count do not read meter_value; the stateful types carry a level in
    assert mt.VALUELESS_TYPES == {"count", "unique_count"}
    assert mt.STATEFUL_TYPES == {"running_total", "high_watermark", "event_duration", "weighted_sum"}
    assert mt.EVENT_SET_TYPES == set(SPEC_TYPES) - mt.STATEFUL_TYPES
    # §4 non-additive: max, min, avg, latest, unique_count and the stateful ones; §10.2: sum and count
    assert mt.ADDITIVE_TYPES == {"sum", "count"} == mt.EXTRAPOLATED_TYPES
    # what the hourly partials (event_count, value_sum, value_min, value_max) of whole hours give exactly
    assert mt.MERGEABLE_TYPES == {"sum", "count", "max", "min"}
    assert not mt.MERGEABLE_TYPES & (mt.STATEFUL_TYPES | {"avg", "latest", "unique_count"})


def _modules() -> list[str]:
    names = []
    for pkg in ("catalog", "transforms", "flows"):
        mod = importlib.import_module(pkg)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
    return names


def test_every_module_set_of_type_names_is_one_of_the_tables():
    """A module-level set, tuple or list whose items are all type names is the table's own object."""
    from catalog import meter_types as mt

    families = {id(v) for k, v in vars(mt).items() if k.endswith("_TYPES")}
    seen = []
    for name in _modules():
        mod = importlib.import_module(name)
        for attr, v in vars(mod).items():
            if (isinstance(v, (set, frozenset, tuple, list)) and len(v) >= 2
                    and all(isinstance(x, str) for x in v) and set(v) <= set(SPEC_TYPES)):
                seen.append(f"{name}.{attr}")
                assert id(v) in families, f"{name}.{attr} = {v!r} is not a set of catalog/meter_types.py"
    assert "transforms.metering.query.ADDITIVE_TYPES" in seen  # the check sees the modules' imports


def _literal_type_sets(path: Path) -> list[tuple[str, int]]:
    """(enclosing name, line) of every literal set, tuple, list or dict keyed by two or more type names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = node.keys
        else:
            continue
        names = {x.value for x in items if isinstance(x, ast.Constant) and x.value in SPEC_TYPES}
        if len(names) >= 2:
            out.append(node.lineno)
    assigned = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    for line in range(node.lineno, node.end_lineno + 1):
                        assigned.setdefault(line, t.id)
    return [(assigned.get(line, "?"), line) for line in out]


def test_no_module_but_the_table_spells_a_set_of_type_names():
    found = []
    for pkg in ("catalog", "transforms", "flows"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "catalog/meter_types.py":
                continue
            found += [f"{rel}:{line} ({name})" for name, line in _literal_type_sets(path)
                      if (rel, name) not in NOT_A_FAMILY]
    assert not found, "type names spelled outside catalog/meter_types.py:\n" + "\n".join(found)
