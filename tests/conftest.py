import flows  # noqa: F401  (sets the Prefect environment before prefect is imported)
import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session; request it in tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
