"""A verb parses the catalogue once: later loads in the same process find it by the files' digest."""

import pytest

from tests.catalog.conftest import write


def _counting(monkeypatch):
    import catalog.load as load_module

    calls = []
    real = load_module._load

    def load(folder):
        calls.append(folder)
        return real(folder)

    monkeypatch.setattr(load_module, "_load", load)
    monkeypatch.setattr(load_module, "_LOADED", {})
    return calls


def test_an_unchanged_folder_is_parsed_once_and_a_changed_one_again(tmp_path, monkeypatch):
    from catalog import load_catalog

    calls = _counting(monkeypatch)
    folder = write(tmp_path, {})
    first = load_catalog(folder)
    assert load_catalog(folder) is first and len(calls) == 1
    (folder / "customers.yaml").write_text("- {customer_id: c1, customer_name: One Corp}\n"
                                           "- {customer_id: c2, customer_name: Two Ltd, timezone: Asia/Tokyo}\n")
    again = load_catalog(folder)
    assert len(calls) == 2 and again.timezone("c2") == "Asia/Tokyo"
    (folder / ".customers.yaml.swp").write_bytes(b"\x00")  # a hidden file is listed, so it counts as a change
    assert load_catalog(folder).ignored_files == (".customers.yaml.swp",) and len(calls) == 3


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_verb_parses_the_catalogue_once(tmp_path, monkeypatch, capsys):
    from flows.cli import main
    from tests.e2e.conftest import write_lake

    lake = write_lake(tmp_path / "lake")
    calls = _counting(monkeypatch)
    # the CLI checks the catalogue before the flow starts; the flow and its tasks load it again
    assert main(["ingest", "--lake", str(lake), "--as-of", "2026-02-03T00:00:00Z"]) == 0, capsys.readouterr().err
    assert len(calls) == 1
