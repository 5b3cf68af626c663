"""Shared fixtures live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.daemon",
    "tests.fixtures.sandbox",
    "tests.fixtures.softhsm",
]
