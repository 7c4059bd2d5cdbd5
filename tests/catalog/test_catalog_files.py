"""Which files make the catalogue (SPEC §3): every file is a table, one file per table, none skipped."""

import polars as pl

from tests.catalog.conftest import BASE, problems, write


def test_misnamed_file_is_an_error_that_suggests_the_near_name(tmp_path):
    cat = write(tmp_path, {"promotion.yaml": """
        - {promotion_id: p1, customer_id: c1, type: percentage, value: 10, start: 2026-01-01}
    """})
    assert problems(cat) == ["catalog/promotion.yaml: not a catalogue table (did you mean promotions.yaml?)"]


def test_file_with_no_near_table_name_lists_the_tables(tmp_path):
    cat = write(tmp_path, {"notes.txt": "remember to bill Acme\n"})
    assert problems(cat) == [
        "catalog/notes.txt: not a catalogue table; the tables are alerts, costs, credits, currencies, customers, "
        "meters, plans, product_items, promotions, rewards, settings, subscriptions"]


def test_two_files_for_one_table_are_an_error(tmp_path):
    cat = write(tmp_path, {"subscriptions.csv": "subscription_id,customer_id,plan_id,start\ns9,c1,basic,2026-01-01\n"})
    assert problems(cat) == [
        "catalog/subscriptions.csv, catalog/subscriptions.yaml: two files for the table subscriptions; keep one"]


def test_yaml_only_table_written_as_csv_is_an_error(tmp_path):
    cat = write(tmp_path, {"plans.yaml": None, "plans.csv": "plan_id,currency\nbasic,USD\n",
                           "customers.json": "[]"})
    assert problems(cat) == [
        "catalog/customers.json: .json is not a catalogue format (customers: .yaml, .yml, .csv or .parquet)",
        "catalog/plans.csv: plans is written in YAML (plans.yaml); only customers, subscriptions and credits "
        "may be .csv or .parquet",
    ]


def test_a_folder_inside_the_catalogue_is_an_error(tmp_path):
    cat = write(tmp_path, {})
    (cat / "old").mkdir()
    assert problems(cat) == ["catalog/old: a folder inside the catalogue; the catalogue is the files directly "
                             "in catalog/ (move it out)"]


def test_hidden_files_are_ignored_and_reported_by_check(tmp_path, capsys):
    from catalog import load_catalog
    from flows.cli import main

    cat = write(tmp_path / "lake" / "catalog", {".DS_Store": b"\x00\x01", ".customers.yaml.swp": b"\x00"})
    assert len(load_catalog(cat).customers) == 2
    assert main(["check", "--lake", str(tmp_path / "lake")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("catalogue OK: 2 customers")
    assert "ignored hidden files: .DS_Store, .customers.yaml.swp" in out


def test_costs_yaml_is_a_known_table(tmp_path):
    from catalog import load_catalog

    cat = write(tmp_path, {"costs.yaml": "- {product_item_id: api, unit_cost: '0.004', currency: USD}\n"})
    assert len(load_catalog(cat).customers) == 2


def test_empty_catalogue_file_says_it_is_empty(tmp_path):
    # and only that: the subscriptions' customers cannot be judged against an empty file
    cat = write(tmp_path, {"customers.yaml": "# customers, exported nightly\n"})
    assert problems(cat) == ["catalog/customers.yaml: the file is empty; write [] for a table with no records"]


def test_empty_csv_and_settings_files_say_they_are_empty(tmp_path):
    cat = write(tmp_path, {"customers.yaml": None, "customers.csv": "", "settings.yaml": "\n"})
    assert problems(cat) == [
        "catalog/customers.csv: the file is empty; write the header line for a table with no records",
        "catalog/settings.yaml: the file is empty; write {} for the default settings",
    ]


def test_header_only_csv_is_a_table_with_no_records(tmp_path):
    from catalog import load_catalog

    cat = write(tmp_path, {"subscriptions.yaml": None,
                           "subscriptions.csv": "subscription_id,customer_id,plan_id,start,end\n"})
    assert len(load_catalog(cat).subscriptions) == 0


def test_semicolon_separated_csv_hints_at_the_delimiter(tmp_path):
    cat = write(tmp_path, {"customers.yaml": None,
                           "customers.csv": "customer_id;customer_name\nc1;One Corp\nc2;Two Ltd, Inc\n"})
    assert problems(cat) == [
        "catalog/customers.csv: the header has one column 'customer_id;customer_name': fields must be separated "
        "by commas (this file seems to use ';')"]


def test_tab_separated_csv_hints_at_the_delimiter(tmp_path):
    cat = write(tmp_path, {"customers.yaml": None,
                           "customers.csv": "customer_id\tcustomer_name\nc1\tOne Corp\nc2\tTwo Ltd\n"})
    assert problems(cat) == [
        "catalog/customers.csv: the header has one column 'customer_id\\tcustomer_name': fields must be "
        "separated by commas (this file seems to use tabs)"]
