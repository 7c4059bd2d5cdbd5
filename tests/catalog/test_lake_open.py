"""A Lake is a place: constructing one does no I/O. The working copy of an object-store lake is
pulled from the bucket by the explicit open step (`Lake.open`, which the command line's
`open_lake` calls), and pushed when a command has succeeded."""

from __future__ import annotations

import pytest

import catalog.lake as lake_module
from catalog.lake import Lake, mirror_root

URL = "s3://bucket/lakes/acme"


@pytest.fixture
def pulls(monkeypatch, tmp_path):
    """The bucket's pulls, recorded instead of made (no network); the cache in tmp_path."""
    monkeypatch.setenv("METERBILL_CACHE", str(tmp_path / "cache"))
    made: list[str] = []

    def pull(self):
        made.append(self.url)
        self.local.mkdir(parents=True, exist_ok=True)
        return {"fetched": 0, "removed": 0}

    monkeypatch.setattr(lake_module.Mirror, "pull", pull)
    yield made
    lake_module.forget_remote_lakes()


def test_constructing_a_lake_of_an_object_store_url_does_no_io(pulls, tmp_path):
    lk = Lake(URL)
    assert pulls == []
    assert not (tmp_path / "cache").exists()
    assert lk.url == URL and lk.root == mirror_root(URL)


def test_opening_a_lake_of_an_object_store_url_pulls_its_working_copy(pulls):
    lk = Lake.open(URL)
    assert pulls == [URL] and lk.root == mirror_root(URL) and lk.root.is_dir()


def test_the_command_lines_open_lake_pulls_an_object_store_lake(pulls):
    from flows.stages.common import open_lake

    lk = open_lake(URL)
    assert pulls == [URL] and lk.root.is_dir()


def test_opening_a_folder_lake_is_constructing_it(tmp_path, pulls):
    assert Lake.open(tmp_path / "lake").root == Lake(tmp_path / "lake").root == tmp_path / "lake"
    assert not (tmp_path / "lake").exists() and pulls == []
