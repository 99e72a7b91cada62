"""What the CPU offers: bf16 where it is native, fp32 where bf16 would be slow (``precision="auto"``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lmccheck import cpus
from lmccheck.barrier_options import BarrierOptions, auto_bf16


@pytest.mark.parametrize(("cap", "allows"), [
    (None, True), ("", True), ("ALL", True), ("default", True), ("NOT_AN_ISA", True),
    ("SSE41", False), ("AVX2", False), ("avx2_vnni_2", False), ("AVX512_CORE", False),
    ("AVX512_CORE_VNNI", False), ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True),
    ("AVX10_1_512_AMX_FP16", True),
])
def test_an_isa_cap_below_avx512_bf16_takes_the_bf16_instructions_away(cap: str | None, allows: bool) -> None:
    assert cpus.isa_cap_allows_bf16(cap) is allows


def _flags(monkeypatch: pytest.MonkeyPatch, **flags: bool) -> None:
    cpus.native_bf16.cache_clear()
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: dict(flags))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cpus.native_bf16.cache_clear()
    yield
    cpus.native_bf16.cache_clear()


@pytest.mark.parametrize(("flags", "native"), [
    ({"avx512_bf16": True, "amx_bf16": False}, True),
    ({"avx512_bf16": False, "amx_bf16": True}, True),
    ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True, "avx2": True}, False),
    ({}, False),
])
def test_native_bf16_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: dict, native: bool) -> None:
    _flags(monkeypatch, **flags)
    assert cpus.native_bf16() is native
    # precision "auto" follows it on the CPU; CUDA is always bf16; "fp32" and "bf16" are what they say
    assert auto_bf16("cpu") is native and BarrierOptions().autocast("cpu") is native
    assert BarrierOptions().resolve(torch.nn.Linear(2, 2), "cpu").precision == ("bf16" if native else "fp32")
    assert auto_bf16("cuda") and BarrierOptions().autocast("cuda")
    assert not BarrierOptions(precision="fp32").autocast("cpu") and BarrierOptions(precision="bf16").autocast("cpu")


def test_a_onednn_cap_below_bf16_makes_auto_fp32_on_a_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _flags(monkeypatch, avx512_bf16=True, amx_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpus.native_bf16() and not BarrierOptions().autocast("cpu")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    cpus.native_bf16.cache_clear()
    assert cpus.native_bf16()


@pytest.mark.slow
def test_the_rule_in_a_fresh_process_under_onednn_limited_to_avx2() -> None:
    """The real machine, not mocked flags: with oneDNN capped at AVX2 (a laptop's CPU) auto is fp32."""
    code = "from lmccheck.barrier_options import BarrierOptions; print(BarrierOptions().autocast('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": ""}).stdout.strip()
    assert out == "False"
