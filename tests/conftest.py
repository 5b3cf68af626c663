"""Shared fixtures live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.daemon",
    "tests.fixtures.cns",
    "tests.fixtures.sandbox",
    "tests.fixtures.trust",
    "tests.fixtures.softhsm",
    "tests.fixtures.pades",
    "tests.fixtures.xades",
]
