import pytest


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A data cache of the test's own (SPARSETRAIN_CACHE), so no test reads what another wrote."""
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
