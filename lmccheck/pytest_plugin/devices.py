"""The plugin's devices: ``--lmc-device`` resolved, one GPU per pytest-xdist worker (``CUDA_VISIBLE_DEVICES``)
and an even share of the CPU cores (torch threads) per worker.

torch is imported inside the functions that need it, so importing the plugin stays cheap.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from ..cpus import available_cpus

__all__ = [
    "DEVICES",
    "GPU_SKIP_REASON",
    "count_visible_gpus",
    "cuda_available",
    "describe_device",
    "gpu_for_worker",
    "is_worker",
    "pin_worker_gpu",
    "resolve_device",
    "share_cpu_threads",
    "threads_per_worker",
]

DEVICES = ("auto", "cpu", "cuda")
GPU_SKIP_REASON = "needs CUDA: paper-scale (gpu) setting; run on a machine with a GPU"


def resolve_device(name: str) -> str:
    """Resolve ``auto``/``cpu``/``cuda`` to ``"cpu"`` or ``"cuda"``.

    ``auto`` picks CUDA when available. Asking for ``cuda`` without CUDA raises
    ``ValueError`` (the plugin turns it into ``pytest.UsageError``).
    """
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ValueError(
            "--lmc-device=cuda was requested but CUDA is not available "
            "(torch.cuda.is_available() is False); use --lmc-device=cpu or auto"
        )
    return "cuda" if available else "cpu"


@functools.lru_cache(maxsize=None)
def describe_device(device: str) -> str:
    """Human-readable device: ``"cpu"`` or ``"cuda (NVIDIA H100 ...)"``."""
    if device != "cuda":
        return device
    import torch

    try:
        return f"cuda ({torch.cuda.get_device_name(torch.cuda.current_device())})"
    except Exception:  # a name is nice to have, never required
        return "cuda"


def cuda_available() -> bool:
    """torch.cuda.is_available(), imported lazily."""
    import torch

    return bool(torch.cuda.is_available())


def _worker_index(worker_id: str) -> int | None:
    """``"gw3"`` -> 3; None for anything that is not an xdist worker id."""
    if worker_id.startswith("gw") and worker_id[2:].isdigit():
        return int(worker_id[2:])
    return None


def gpu_for_worker(worker_id: str, visible: str | None, n_gpus: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value for xdist worker ``worker_id``.

    Worker ``gw<i>`` gets GPU ``i mod n``. When ``visible`` (an existing
    ``CUDA_VISIBLE_DEVICES``) is set, its entries are the GPUs to share out and
    ``n_gpus`` is ignored; otherwise GPUs ``0..n_gpus-1`` are. Returns None
    (leave the environment alone) when there is no GPU or the worker id is not
    of the form ``gw<i>``.
    """
    index = _worker_index(worker_id)
    if index is None:
        return None
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual "no GPU".
        if devices and devices[0].startswith("-"):
            devices = []
    else:
        devices = [str(k) for k in range(max(n_gpus, 0))]
    if not devices:
        return None
    return devices[index % len(devices)]


def count_visible_gpus() -> int:
    """Count GPUs with ``nvidia-smi -L`` without initializing CUDA (0 if absent)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def is_worker(config: pytest.Config) -> bool:
    """True inside a pytest-xdist worker process."""
    return hasattr(config, "workerinput")


def worker_input(config: pytest.Config) -> dict[str, Any]:
    """What pytest-xdist hands a worker process (``workerid``, ``workercount``, ...); empty elsewhere."""
    return dict(getattr(config, "workerinput", {}))


def pin_worker_gpu(config: pytest.Config) -> None:
    """On an xdist worker, restrict CUDA to GPU ``i mod n`` before CUDA initializes."""
    if not is_worker(config):
        return
    # Same value as $PYTEST_XDIST_WORKER, but only set in real worker processes
    # (the env var also leaks into subprocesses and in-process pytester runs).
    worker_id = str(worker_input(config).get("workerid") or os.environ.get("PYTEST_XDIST_WORKER", ""))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    n_gpus = 0 if visible is not None else count_visible_gpus()
    chosen = gpu_for_worker(worker_id, visible, n_gpus)
    if chosen is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"lmccheck: CUDA already initialized; cannot pin {worker_id} to GPU {chosen}"),
            stacklevel=2,
        )
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen


def threads_per_worker(cpus: int, workers: int) -> int:
    """The torch CPU threads each of ``workers`` processes gets on ``cpus`` cores: an even share, at least 1.

    One process per core beats one process with a thread per core here: the
    CPU tier's small matrix products scale badly over threads (on 2 cores, two
    1-thread workers train the 3x512 MLP 1.2x and the 3x128 one 1.7x faster
    than one 2-thread process), and two 2-thread processes on 2 cores would
    oversubscribe them.
    """
    return max(1, int(cpus) // max(1, int(workers)))


def share_cpu_threads(config: pytest.Config) -> None:
    """On an xdist worker, give torch an even share of the cores, unless ``OMP_NUM_THREADS`` says otherwise."""
    if not is_worker(config) or os.environ.get("OMP_NUM_THREADS"):
        return
    workers = int(worker_input(config).get("workercount") or 1)
    import torch

    torch.set_num_threads(threads_per_worker(available_cpus(), workers))
