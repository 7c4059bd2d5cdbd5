"""Every error path of the command line: one line per problem, a non-zero exit, no traceback."""

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import write_lake


def one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_option(cli, small_lake):
    code, out, err = cli("ingest", "--lake", small_lake, "--bogus")
    assert code == 2
    assert one_line(err) == "meterbill ingest: error: No such option: --bogus"


def test_unknown_verb(cli):
    code, out, err = cli("frobnicate")
    assert code == 2
    assert one_line(err) == "meterbill frobnicate: error: No such command 'frobnicate'."


def test_missing_lake(cli, tmp_path):
    code, out, err = cli("run", "--lake", tmp_path / "nowhere")
    assert code == 2
    assert one_line(err) == (f"meterbill run: error: --lake: {tmp_path / 'nowhere'} does not exist "
                             "(run `meterbill demo` or create it with a catalog/ folder)")


def test_bad_as_of(cli, small_lake):
    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "yesterday")
    assert code == 2
    assert "--as-of: 'yesterday' is not an ISO-8601 instant or date" in one_line(err)


def test_bad_catalogue_lists_every_problem_and_writes_nothing(cli, tmp_path):
    from tests.e2e.conftest import CATALOG

    bad = dict(CATALOG)
    bad["plans.yaml"] = """
        - plan_id: basic
          currency: USD
          billing_period: {interval: fortnight}
          items:
            - {product_item_id: nope, price: {model: per_unit}}
    """
    bad["customers.yaml"] = """
        - {customer_id: c1, customer_name: One Corp, timezone: Mars/Olympus}
        - {customer_id: c2, customer_name: Two Ltd}
    """
    lake = write_lake(tmp_path / "lake", catalog=bad)
    code, out, err = cli("run", "--lake", lake)
    assert code == 1
    lines = err.splitlines()
    assert "catalog/customers.yaml: record 1 (customer_id=c1): timezone: unknown IANA time zone 'Mars/Olympus'" in lines
    assert any(l.startswith("catalog/plans.yaml: record 1 (plan_id=basic): billing_period.interval: Input should be")
               for l in lines)
    assert "catalog/plans.yaml: record 1 (plan_id=basic): items[0].price: per_unit needs unit_price" in lines
    # cross-file references in the same pass, the invalid plan's own included (SPEC §3)
    assert "catalog/plans.yaml: record 1 (plan_id=basic): items[0].product_item_id: unknown product item 'nope'" in lines
    assert "catalog/subscriptions: record 2 (subscription_id=s2): plan_id: unknown plan 'pro'" in lines
    assert lines[-1] == "meterbill run: the catalogue has 5 problem(s); nothing was written"
    assert "Traceback" not in err
    assert not (lake / "warehouse").exists()


def test_check_reports_cross_references(cli, tmp_path):
    from tests.e2e.conftest import CATALOG

    bad = dict(CATALOG)
    bad["subscriptions.yaml"] = """
        - {subscription_id: s1, customer_id: c1, plan_id: gold, start: 2026-01-01}
        - {subscription_id: s2, customer_id: c9, plan_id: pro, start: 2026-01-01}
    """
    lake = write_lake(tmp_path / "lake", catalog=bad)
    code, out, err = cli("check", "--lake", lake)
    assert code == 1
    assert err.splitlines()[:2] == [
        "catalog/subscriptions: record 1 (subscription_id=s1): plan_id: unknown plan 'gold'",
        "catalog/subscriptions: record 2 (subscription_id=s2): customer_id: unknown customer 'c9'",
    ]


def test_check_ok(cli, small_lake):
    code, out, err = cli("check", "--lake", small_lake)
    assert code == 0
    assert out.startswith("catalogue OK: 2 customers, 1 meters")


def test_real_command_has_help_on_every_verb(capsys):
    # the installed entry point, once per kind of verb (a flow verb and a table verb) …
    exe = Path(sys.executable).with_name("meterbill")
    for verb in ("run", "usage"):
        r = subprocess.run([str(exe), verb, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (verb, r.stderr)
        assert "Usage: meterbill" in r.stdout
    # … and every verb through the same entry function, in this process (2 s of imports each otherwise)
    from flows.cli import main

    for verb in ("demo", "generate", "ingest", "meter", "bill", "alerts", "run", "backfill", "usage", "sql",
                 "reconcile", "report", "check", "serve"):
        assert main([verb, "--help"]) == 0, verb
        assert "Usage: meterbill " + verb in " ".join(capsys.readouterr().out.split()), verb
