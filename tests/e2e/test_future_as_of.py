"""An --as-of more than 5 minutes after the clock is refused by every verb and flow (SPEC §8): a final
invoice made as of the future cannot be taken back. --allow-future (allow_future) lets it through."""

import datetime as dt

import pytest

from flows.stages.common import UsageError
from tests.e2e.test_cli_errors import one_line

FUTURE = "2030-01-01"  # the typo; years after any clock these tests run on


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("verb", ["ingest", "meter", "bill", "alerts", "run", "reconcile"])
def test_future_as_of_is_refused_by_every_verb_and_nothing_is_written(cli, small_lake, verb):
    before = _tree(small_lake)
    code, out, err = cli(verb, "--lake", small_lake, "--as-of", FUTURE)
    assert code == 2
    line = one_line(err)
    assert line.startswith(f"meterbill {verb}: error: --as-of: 2030-01-01T00:00:00Z is in the future "
                           "(more than 5 minutes after the clock, ")
    assert line.endswith("give --allow-future if that is meant")
    assert _tree(small_lake) == before


def test_future_as_of_is_refused_by_demo_before_it_writes_anything(cli, tmp_path):
    lake = tmp_path / "new"
    code, out, err = cli("demo", "--lake", lake, "--as-of", "2030-01-01T00:00:00Z")
    assert code == 2
    assert "--as-of: 2030-01-01T00:00:00Z is in the future" in one_line(err)
    assert not lake.exists()


def test_as_of_rule_allows_five_minutes_of_clock_skew():
    from flows.stages.common import as_of_instant

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    assert as_of_instant((now + dt.timedelta(minutes=4)).isoformat()) == now + dt.timedelta(minutes=4)
    assert as_of_instant(None) >= now
    with pytest.raises(UsageError, match="is in the future"):
        as_of_instant((now + dt.timedelta(minutes=6)).isoformat())
    late = now + dt.timedelta(days=3)
    assert as_of_instant(late.isoformat(), allow_future=True) == late
    # the flows' name for the override
    with pytest.raises(UsageError, match="as_of: .* give allow_future=True if that is meant"):
        as_of_instant(FUTURE, name="as_of", flag="allow_future=True")


def test_deployment_params_refuse_a_future_as_of(small_lake):
    from flows.deployments import PipelineParams

    with pytest.raises(UsageError, match="as_of: 2030-01-01T00:00:00Z is in the future"):
        PipelineParams(lake=str(small_lake), as_of=FUTURE).resolved()
    assert PipelineParams(lake=str(small_lake), as_of=FUTURE, allow_future=True).resolved() == (
        str(small_lake), "2030-01-01T00:00:00+00:00")
    # a past instant (the scheduled runs' and the tests') goes through as before
    assert PipelineParams(lake=str(small_lake), as_of="2026-02-03").resolved()[1] == "2026-02-03T00:00:00+00:00"


@pytest.mark.usefixtures("prefect_harness")
def test_flows_called_directly_refuse_a_future_as_of(small_lake):
    from flows.alerts import alerts_flow
    from flows.bill import bill_flow
    from flows.ingest import ingest_flow
    from flows.meter import meter_flow
    from flows.run import run_flow

    for f in (run_flow, ingest_flow, meter_flow, bill_flow, alerts_flow):
        with pytest.raises(UsageError, match="as_of: 2030-01-01T00:00:00Z is in the future"):
            f(lake=str(small_lake), as_of=FUTURE)
    assert not (small_lake / "warehouse" / "invoices").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_allow_future_lets_a_future_as_of_through(cli, small_lake):
    from catalog import Lake

    code, out, err = cli("bill", "--lake", small_lake, "--as-of", "2030-01-15", "--allow-future")
    assert code == 0, err
    inv = Lake(small_lake).read("invoices")
    # as of 2030-01-15, c1 and c2 each have 49 monthly periods from January 2026: the 48 up to
    # December 2029 are past their 24 h grace (final), January 2030 is open (draft)
    assert dict(inv.group_by("status").len().iter_rows()) == {"final": 96, "draft": 2}
