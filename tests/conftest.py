"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from lmccheck import cpus


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without native bf16, where ``precision="auto"`` (every default) evaluates in fp32: the tests that
    compare the evaluation engine with fp32 references, bit for bit or to 1e-6, run there on every machine
    (``tests/test_cpus.py`` tests the rule itself)."""
    monkeypatch.setattr(cpus, "native_bf16", lambda: False)
