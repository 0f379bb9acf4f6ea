"""Fixtures of the operator's offline validation tests (see oplib.py for the helpers)."""

from pathlib import Path

import pytest

from oplib import OPERATOR_BIN


@pytest.fixture(scope="session")
def operator_bin() -> Path:
    if not OPERATOR_BIN.exists():
        pytest.fail(f"{OPERATOR_BIN} missing: run `cargo build --release -p operator` first")
    return OPERATOR_BIN

