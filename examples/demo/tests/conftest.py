import pytest

from inventory import Stock


@pytest.fixture
def stock():
    return Stock({"apple": 5, "pear": 2})


@pytest.fixture(scope="session")
def catalogue():
    # Stands in for an expensive session-wide resource.
    return {f"item-{i}": i for i in range(1000)}
