from conftest import SCHEMA, SHARED_SCHEMA
import pytest


def test_vendored_schema_matches_shared_design():
    if not SHARED_SCHEMA.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert SCHEMA.read_text() == SHARED_SCHEMA.read_text()
