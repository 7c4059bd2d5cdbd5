"""Fixtures of the orchestration tests: the e2e lake and the in-process `meterbill` command."""

from tests.e2e.conftest import cli, small_lake  # noqa: F401  (re-exported fixtures)
