"""What this machine's CPU offers: the cores this process may run on (what the xdist workers share, and what the
report's figure pool uses), and whether it computes in bf16 natively (what ``precision="auto"`` follows)."""

from __future__ import annotations

import functools
import os

#: oneDNN's instruction-set caps (``ONEDNN_MAX_CPU_ISA``) in increasing order; those from ``AVX512_CORE_BF16`` on
#: have bf16 dot products (AVX512-BF16 or AMX). Below it oneDNN emulates bf16 (AVX512_CORE) or converts
#: through fp32 (AVX2): 16x slower than fp32 for the 3-layer MLP under AVX2 on this project's machine
#: (docs/performance.md)
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
               "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
FIRST_NATIVE_BF16_ISA = "AVX512_CORE_BF16"


def available_cpus() -> int:
    """Cores in this process's affinity mask (Linux), else ``os.cpu_count()``; at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def isa_cap_allows_bf16(cap: str | None) -> bool:
    """Whether a oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``; None, ``ALL`` or ``DEFAULT``: no
    cap) leaves oneDNN its bf16 instructions. An unknown name counts as no cap, as oneDNN reads it."""
    name = (cap or "").strip().upper()
    if name in ("", "ALL", "DEFAULT") or name not in ONEDNN_ISAS:
        return True
    return ONEDNN_ISAS.index(name) >= ONEDNN_ISAS.index(FIRST_NATIVE_BF16_ISA)


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively: it has AVX512-BF16 or AMX-BF16, and oneDNN (the
    library torch's CPU convolutions and matmuls go through) may use them. Where it does, bf16 autocast halves a
    barrier's time; where it does not, it is up to 16x slower than fp32."""
    import torch  # here, not at import: the CLI's cache commands and the xdist controller need no torch

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if not isa_cap_allows_bf16(cap):
        return False
    try:
        flags = torch._C._cpu._get_cpu_capability()
        native = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    except AttributeError:  # torch before 2.5: its older, narrower probes; none at all means fp32, never slow
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        native = any(bool(p()) for p in probes if p is not None)
    return native and torch.backends.mkldnn.is_available()
