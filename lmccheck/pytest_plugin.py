"""pytest plugin that runs lmccheck claim checks and writes the claim report.

Loaded through the ``pytest11`` entry point ``lmccheck`` (and, from a source
tree, through the repository's root ``conftest.py``). It provides:

* the ``lmccheck`` option group (``--lmc-device``, ``--lmc-cache``, ...);
* the session fixture ``lmc_config`` (:class:`LmcConfig`);
* the function fixture ``measure`` (:class:`Measurement`), the recorder a claim
  check fills in; its record rides on the test report's ``user_properties``
  (as a JSON string under :data:`RECORD_KEY`) so it reaches the controller
  under pytest-xdist;
* the markers ``claim(id)`` and ``gpu``;
* Hypothesis profiles ``ci`` / ``dev``;
* one GPU per xdist worker (``CUDA_VISIBLE_DEVICES``) and an even share of
  the CPU cores (torch threads) per worker;
* the report (``lmccheck.report.write_report``) and a terminal table.

This is the only lmccheck module that imports pytest. torch is imported
lazily, so loading the plugin stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lmccheck import report as _report
from lmccheck import assertions as _assertions
from lmccheck import verdict as _verdict
from lmccheck.cpus import available_cpus as _available_cpus
from lmccheck.fileio import atomic_write_bytes
from lmccheck.argtypes import nonnegative_int, positive_int
from lmccheck.catalog import Catalog, CatalogError, claim_of_check, load_catalog, parse_ids
from lmccheck.measurement import Measurement
from lmccheck.nodeids import base_nodeid

__all__ = [
    "ENTRY_POINT_NAME",
    "GPU_SKIP_REASON",
    "RECORD_KEY",
    "LmcConfig",
    "Measurement",
    "count_visible_gpus",
    "gpu_for_worker",
    "resolve_device",
    "threads_per_worker",
]

#: Name of the ``pytest11`` entry point (and the plugin's registration name).
ENTRY_POINT_NAME = "lmccheck"
#: ``user_properties`` key of the JSON record a claim check produces.
RECORD_KEY = "lmccheck_record"
GPU_SKIP_REASON = "needs CUDA: paper-scale (gpu) setting; run on a machine with a GPU"
#: --lmc-budget choices, and the replicates per setting without --lmc-seeds
BUDGETS = ("full", *_report.REDUCED_BUDGETS)
DEFAULT_SEEDS = 3
REDUCED_SEEDS = 2
DEVICES = ("auto", "cpu", "cuda")

_config_key = pytest.StashKey["LmcConfig"]()
_measure_key = pytest.StashKey["Measurement"]()
_setup_duration_key = pytest.StashKey[float]()


# --------------------------------------------------------------------------- #
# Pure helpers (no pytest state)
# --------------------------------------------------------------------------- #
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
    except Exception:  # noqa: BLE001 - a name is nice to have, never required
        return "cuda"


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


def _git_commit(root: Path) -> str | None:
    """``git rev-parse HEAD`` in ``root``; None if git or the repository is unavailable."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _dist_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _now() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class LmcConfig:
    """Resolved lmccheck options, from the ``lmc_config`` session fixture."""

    device: str
    cache: Path
    data_root: Path | None
    download: bool
    seeds: int
    report_dir: Path
    retrain: bool
    barrier_precision: str = "auto"
    """Precision of the claims' barrier evaluations (``--lmc-barrier-precision``; part of every barrier's key)."""
    budget: str = "full"
    """``--lmc-budget``: ``full``, ``smoke`` or ``dryrun`` (the GPU settings at a reduced size)."""
    reduced_seeds: int = 2
    """Replicates of a reduced setting (``--lmc-seeds``, else :data:`REDUCED_SEEDS`)."""
    train_together: bool | str = False
    """``--lmc-train-together``: ``"auto"`` (replicates as one ensemble on CUDA), or False."""
    seed_offset: int = 0
    """``--lmc-seed-offset``: replicate r uses the seeds of pair r + offset (0: the default seeds)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``lmccheck`` option group."""
    group = parser.getgroup("lmccheck", "lmccheck claim checks")
    parser.addini("lmc_catalog", default="",
                  help="the claims catalog as module:attribute (lmccheck's: claims.catalog:CATALOG); it decides "
                  "the ids --lmc-claim accepts. Empty: any id of letters then digits")
    group.addoption(
        "--lmc-device", choices=DEVICES, default="auto",
        help="device for claim checks (default: auto = cuda if available)"
    )
    group.addoption(
        "--lmc-cache",
        metavar="DIR",
        default=None,
        help="fixture store root (default: $LMCCHECK_CACHE or ~/.cache/lmccheck)",
    )
    group.addoption("--lmc-data-root", metavar="DIR", default=None, help="root of non-embedded datasets")
    group.addoption("--lmc-download", action="store_true", default=False, help="allow dataset downloads")
    group.addoption(
        "--lmc-seeds", metavar="N", type=positive_int, default=None,
        help=f"replicates (seeds) per setting (default: {DEFAULT_SEEDS}; {REDUCED_SEEDS} for the settings of "
        "--lmc-budget smoke or dryrun)",
    )
    group.addoption(
        "--lmc-budget", choices=BUDGETS, default="full",
        help="full: the settings as the papers run them (default); smoke: every GPU setting (-m gpu) at a reduced "
        "size that still runs its claim's whole path (Fashion-MNIST, 2 epochs, at most 4x wide, fewer IMP levels, "
        f"{REDUCED_SEEDS} seeds), to check the GPU path on a device in minutes; dryrun: every GPU setting's whole "
        "path on any device, the CPU included (each on its own dataset, 1/16 of its width and at most 1/2x, 256 "
        "training examples, 2 epochs, 6 of its checkpoints, barriers of 5 alphas on 16 examples, "
        f"{REDUCED_SEEDS} seeds; `make gpu-dryrun`). Reduced verdicts never "
        "stand for the paper-scale tier. The CPU tier is the same under every budget",
    )
    group.addoption(
        "--lmc-seed-offset", metavar="K", type=nonnegative_int, default=0,
        help="shift every replicate's seeds: replicate r uses the init and SGD seeds of pair r + K (default 0). "
        "A run with K = 100 repeats every claim on networks that share no seed with the default run",
    )
    group.addoption("--lmc-report", metavar="DIR", default="report", help="report directory (default: report)")
    group.addoption("--lmc-retrain", action="store_true", default=False, help="ignore stored fixtures and retrain")
    group.addoption(
        "--lmc-barrier-precision", choices=("bf16", "fp32", "auto"), default="auto",
        help="precision of barrier evaluations (default auto: bf16 autocast on CUDA and on a CPU with native bf16 "
        "(AVX512-BF16 or AMX), where it halves the tier's main cost and moves error barriers by up to 0.2 point; "
        "fp32 elsewhere, where bf16 is emulated and up to 16x slower; bf16 or fp32 force one, fp32 for exact "
        "figures). It is part of every barrier's store key",
    )
    group.addoption(
        "--lmc-train-together", action="store_true", default=False,
        help="on CUDA, train the missing replicates of a setting together as one vmapped ensemble "
        "(lmccheck.ensemble); each run is stored under its own key, as if trained alone",
    )
    group.addoption("--lmc-no-report", action="store_true", default=False, help="do not write report files")
    group.addoption(
        "--lmc-compare", metavar="OLD/claims.json", default=None,
        help="compare this run with an earlier report: every assertion whose outcome changed (PASS <-> FAIL "
        "loudly, to or from INCONCLUSIVE as a note) and every estimate that moved beyond its interval; printed "
        "after the claim table and written to compare.md in the report directory",
    )
    group.addoption(
        "--lmc-no-progress", action="store_true", default=False,
        help="do not print a line per product built, nor training bars (they are on by default, through "
        "pytest's output capture)",
    )
    group.addoption(
        "--lmc-claim", metavar="IDS", action="append", default=[],
        help="run only the checks of these claims, by the id of their claim marker (e.g. S2,S5; repeatable). "
        "Unlike -k S2 it never selects S12 or a check that merely shares S2's file",
    )


def _abs(config: pytest.Config, path: str) -> Path:
    """Expand ``~`` and make ``path`` absolute relative to the invocation directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(config.invocation_params.dir) / p


def build_config(config: pytest.Config) -> LmcConfig:
    """Build (and cache on ``config.stash``) the resolved :class:`LmcConfig`."""
    if _config_key in config.stash:
        return config.stash[_config_key]
    try:
        device = resolve_device(config.getoption("lmc_device"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    cache = config.getoption("lmc_cache") or os.environ.get("LMCCHECK_CACHE") or "~/.cache/lmccheck"
    data_root = config.getoption("lmc_data_root")
    cfg = LmcConfig(
        device=device,
        cache=_abs(config, cache),
        data_root=_abs(config, data_root) if data_root else None,
        download=bool(config.getoption("lmc_download")),
        seeds=int(config.getoption("lmc_seeds") or DEFAULT_SEEDS),
        reduced_seeds=int(config.getoption("lmc_seeds") or REDUCED_SEEDS),
        budget=str(config.getoption("lmc_budget")),
        train_together="auto" if config.getoption("lmc_train_together") else False,
        seed_offset=int(config.getoption("lmc_seed_offset") or 0),
        report_dir=_abs(config, config.getoption("lmc_report")),
        retrain=bool(config.getoption("lmc_retrain")),
        barrier_precision=str(config.getoption("lmc_barrier_precision")),
    )
    config.stash[_config_key] = cfg
    return cfg


@pytest.fixture(scope="session")
def lmc_config(pytestconfig: pytest.Config) -> LmcConfig:
    """The resolved lmccheck options (device, cache, seeds, ...)."""
    return build_config(pytestconfig)


# --------------------------------------------------------------------------- #
# Configure: markers, hypothesis, GPU pinning
# --------------------------------------------------------------------------- #
def _is_worker(config: pytest.Config) -> bool:
    """True inside a pytest-xdist worker process."""
    return hasattr(config, "workerinput")


def _register_markers(config: pytest.Config) -> None:
    """Register the lmccheck markers (the project runs with --strict-markers)."""
    config.addinivalue_line("markers", "claim(id): the paper claim this check tests, e.g. claim('S3')")
    config.addinivalue_line(
        "markers", "lmc_finding(reason): a setting where the claim fails significantly (a known finding): its FAIL "
        "keeps the run green and is reported as FAIL; a PASS there fails the run, INCONCLUSIVE does not")
    config.addinivalue_line("markers",
                            "gpu: paper-scale setting; needs CUDA (deselected by default, select with -m gpu)")
    config.addinivalue_line("markers", f"{RUN_ORDER_MARK}(n): run after the checks of a lower n (unmarked: 0)")
    config.addinivalue_line("markers", f"{BUDGET_MARK}(name): the --lmc-budget a GPU check belongs to ("
                            f"{', '.join(BUDGETS)}); a run deselects the other budgets' checks")


def _setup_hypothesis(config: pytest.Config) -> None:
    """Register the ``ci``/``dev`` profiles and load ``$HYPOTHESIS_PROFILE`` (default ``ci``).

    An explicit ``--hypothesis-profile`` wins. Without hypothesis installed this is a no-op.
    """
    try:
        from hypothesis import settings
    except ImportError:
        return
    # Explicit parent: otherwise a profile inherits whatever profile is loaded now.
    base = settings.get_profile("default")
    settings.register_profile("ci", base, derandomize=True, deadline=None, print_blob=True, max_examples=25)
    settings.register_profile("dev", base, deadline=None, max_examples=50)
    if config.getoption("hypothesis_profile", None):
        return
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    try:
        settings.load_profile(name)
    except Exception as exc:  # hypothesis.errors.InvalidArgument
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE={name!r}: {exc}") from None


def _pin_worker_gpu(config: pytest.Config) -> None:
    """On an xdist worker, restrict CUDA to GPU ``i mod n`` before CUDA initializes."""
    if not _is_worker(config):
        return
    # Same value as $PYTEST_XDIST_WORKER, but only set in real worker processes
    # (the env var also leaks into subprocesses and in-process pytester runs).
    worker_id = str(config.workerinput.get("workerid") or os.environ.get("PYTEST_XDIST_WORKER", ""))
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


def _share_cpu_threads(config: pytest.Config) -> None:
    """On an xdist worker, give torch an even share of the cores, unless ``OMP_NUM_THREADS`` says otherwise."""
    if not _is_worker(config) or os.environ.get("OMP_NUM_THREADS"):
        return
    workers = int(config.workerinput.get("workercount") or 1)
    import torch

    torch.set_num_threads(threads_per_worker(_available_cpus(), workers))


def pytest_configure(config: pytest.Config) -> None:
    """Markers, hypothesis profile, GPU pinning, CPU threads, device check, controller state."""
    _register_markers(config)
    _pin_worker_gpu(config)
    _share_cpu_threads(config)
    _setup_hypothesis(config)
    if config.getoption("lmc_device") == "cuda":
        build_config(config)  # fail fast with a UsageError when CUDA is missing
    # a bad catalog or id is a usage error before any worker starts
    parse_claim_ids(config, config.getoption("lmc_claim", None) or [])
    if not _is_worker(config) and not config.pluginmanager.has_plugin(_Controller.name):
        config.pluginmanager.register(_Controller(config), _Controller.name)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the controller plugin (matters for in-process pytester runs)."""
    controller = config.pluginmanager.get_plugin(_Controller.name)
    if controller is not None:
        config.pluginmanager.unregister(controller)


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: pytest.PytestPluginManager) -> None:
    """Avoid double registration when this module is loaded by module name.

    ``-p lmccheck.pytest_plugin`` (or ``pytest_plugins`` in a conftest)
    registers this module under its module name; the ``pytest11`` entry point
    would then register the same module again as ``lmccheck`` and pluggy would
    raise. Blocking the entry-point name makes the entry point a no-op.
    """
    if plugin is sys.modules[__name__] and plugin_name != ENTRY_POINT_NAME and not manager.is_blocked(ENTRY_POINT_NAME):
        if manager.get_plugin(ENTRY_POINT_NAME) is None:
            manager.set_blocked(ENTRY_POINT_NAME)


def _cuda_available() -> bool:
    """torch.cuda.is_available(), imported lazily."""
    import torch

    return bool(torch.cuda.is_available())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``gpu`` items without CUDA or with --lmc-device=cpu (before any fixture is set up), except under
    ``--lmc-budget dryrun``, whose reduced GPU settings run on whatever device is there."""
    if item.get_closest_marker("gpu") is None or item.config.getoption("lmc_budget") == "dryrun":
        return
    if not _cuda_available():
        pytest.skip(GPU_SKIP_REASON)
    if item.config.getoption("lmc_device") == "cpu":
        pytest.skip("gpu (paper-scale) setting skipped: --lmc-device=cpu")


# --------------------------------------------------------------------------- #
# Live progress, through pytest's output capture
# --------------------------------------------------------------------------- #
class Progress:
    """Lines (and training bars) on the real terminal while a claim check runs.

    pytest captures a test's output; these suspend the capture for the time of
    one write, as ``capsys.disabled()`` does. On the controller a line goes
    through the terminal reporter (it starts on a fresh line); on a
    pytest-xdist worker it goes to the worker's stderr, which xdist leaves
    attached to the terminal, prefixed with the worker id. Bars only where they
    cannot interleave: on the controller, when stderr is a terminal.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled = not config.getoption("lmc_no_progress", False)
        self.worker = str(config.workerinput.get("workerid", "")) if _is_worker(config) else ""
        self.prefix = f"[{self.worker}] " if self.worker else ""
        self._warned: set[str] = set()

    def _uncaptured(self) -> Any:
        capman = self.config.pluginmanager.getplugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()

    def line(self, text: str) -> None:
        """Print one progress line (nothing with ``--lmc-no-progress``)."""
        if not self.enabled:
            return
        with self._uncaptured():
            reporter = None if self.worker else self.config.pluginmanager.getplugin("terminalreporter")
            if reporter is not None:
                # start on a fresh line (after "claims/test_x.py " or a test's "."), whatever wrote last
                if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                    reporter.write("\n")
                reporter.line(self.prefix + text)
            else:
                sys.stderr.write(self.prefix + text + "\n")
                sys.stderr.flush()

    def bar_stream(self) -> Any:
        """A stream for tqdm training bars, or None where bars would interleave or there is no terminal."""
        if not self.enabled or self.worker:
            return None
        with self._uncaptured():  # under fd capture, stderr is a temp file until the capture is suspended
            tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        if not tty:
            return None
        try:  # tqdm's monitor thread would refresh bars (and toggle pytest's capture) from another thread
            import tqdm

            tqdm.tqdm.monitor_interval = 0
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return None
        return _UncapturedStream(self)

    def warn_once(self, what: str, exc: BaseException) -> None:
        """Report a failure of the run's bookkeeping (plan, manifests, progress) once, never fail the run."""
        if what in self._warned:
            return
        self._warned.add(what)
        try:
            self.line(f"lmccheck: {what} failed and is skipped for this run: {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - never let reporting break a run
            pass


class _UncapturedStream(io.TextIOBase):
    """A text stream whose writes reach the real stderr, capture suspended (for tqdm)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress

    encoding = "utf-8"

    def write(self, text: str) -> int:
        with self._progress._uncaptured():
            sys.stderr.write(text)
            sys.stderr.flush()
        return len(text)

    def isatty(self) -> bool:
        return True


def progress(config: pytest.Config) -> Progress:
    """The session's :class:`Progress` (one per process)."""
    if _progress_key not in config.stash:
        config.stash[_progress_key] = Progress(config)
    return config.stash[_progress_key]


_progress_key = pytest.StashKey[Progress]()


# --------------------------------------------------------------------------- #
# The measure fixture (its recorder, Measurement, lives in lmccheck.measurement)
# --------------------------------------------------------------------------- #
def _claim_id(item: pytest.Item) -> str | None:
    """The id from the item's ``claim`` marker; None without one.

    Raises ``pytest.UsageError`` for a malformed marker.
    """
    marker = item.get_closest_marker("claim")
    if marker is None:
        return None
    args = list(marker.args) or [marker.kwargs.get("id")]
    if len(args) != 1 or not isinstance(args[0], str) or not args[0]:
        raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.claim('S3') with exactly one claim id string")
    return args[0]


_catalog_key = pytest.StashKey["Catalog | None"]()


def catalog(config: pytest.Config) -> Catalog | None:
    """The run's claims catalog (ini option ``lmc_catalog``), loaded once; None when none is configured."""
    if _catalog_key not in config.stash:
        try:
            config.stash[_catalog_key] = load_catalog(str(config.getini("lmc_catalog") or ""))
        except CatalogError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config.stash[_catalog_key]


def parse_claim_ids(config: pytest.Config, values: list[str]) -> list[str]:
    """``["S2,S5", "z1"]`` -> ``["S2", "S5", "Z1"]``; a ``pytest.UsageError`` names an id outside the catalog."""
    try:
        return parse_ids(values, catalog(config))
    except CatalogError as exc:
        raise pytest.UsageError(f"--lmc-claim: {exc} (e.g. --lmc-claim S2,S5)") from None


#: the mark naming the ``--lmc-budget`` a check belongs to (``full`` or a reduced budget): a project collects every
#: budget's version of its GPU checks and the run keeps those of its own budget; an unmarked check runs under any
BUDGET_MARK = "lmc_budget"


#: the mark that orders checks: ``lmc_run_order(n)`` runs after every check of a lower n (0 unmarked), so that a
#: check sharing an xdist group with another setting's checks runs after them (claims.settings.WORKER_GROUPS)
RUN_ORDER_MARK = "lmc_run_order"


def run_order(item: pytest.Item) -> int:
    """An item's ``lmc_run_order`` (0 when it has none)."""
    mark = item.get_closest_marker(RUN_ORDER_MARK)
    return int(mark.args[0]) if mark is not None else 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Checks in ``lmc_run_order`` (a stable sort: the files' order within each rank); the checks of another
    ``--lmc-budget`` than the run's deselected; ``--lmc-claim S2,S5``: keep the checks whose claim marker names
    one of the ids, deselect the rest."""
    items.sort(key=run_order)
    chosen = str(config.getoption("lmc_budget", "full") or "full")

    def this_budget(item: pytest.Item) -> bool:
        mark = item.get_closest_marker(BUDGET_MARK)
        return mark is None or mark.args[0] == chosen

    _deselect(config, items, this_budget)
    wanted = parse_claim_ids(config, config.getoption("lmc_claim") or [])
    if wanted:
        _deselect(config, items, lambda item: _claim_id(item) in wanted)


def _deselect(config: pytest.Config, items: list[pytest.Item], keep: Callable[[pytest.Item], bool]) -> None:
    """Deselect (in place, reported to pytest) the items ``keep`` says no to."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (kept if keep(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def claim_from_nodeid(nodeid: str, claims: Catalog | None) -> tuple[str, str] | None:
    """``(claim, setting)`` read from a claim check's node id alone, for a process that never sees the items
    (the controller under pytest-xdist): the function is named ``test_<claim id>_...`` (every check of
    ``claims/`` is; tests/test_claim_names.py keeps it so) and the setting is its parametrize id. None for a
    node id that does not name a claim of ``claims`` (any claim id without a catalog)."""
    name = base_nodeid(nodeid).rsplit("::", 1)[-1]
    func, _, param = name.partition("[")
    claim = claim_of_check(func, claims)
    if claim is None:
        return None
    return claim, (param[:-1] if param.endswith("]") else param) or "default"


def _default_setting(item: pytest.Item) -> str:
    """The item's parametrize id, or ``"default"``."""
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None and callspec.id else "default"


@pytest.fixture
def measure(request: pytest.FixtureRequest, lmc_config: LmcConfig) -> Measurement:
    """Recorder for a claim check (the item needs ``@pytest.mark.claim(id)``)."""
    item = request.node
    claim = _claim_id(item)
    if claim is None:
        pytest.fail(
            f"{item.nodeid} uses the `measure` fixture but has no claim marker; "
            "decorate it with @pytest.mark.claim('<id>'), e.g. @pytest.mark.claim('S3')",
            pytrace=False,
        )
    m = Measurement(
        claim=claim, setting=_default_setting(item), nodeid=base_nodeid(item.nodeid),
        device=describe_device(lmc_config.device)
    )
    item.stash[_measure_key] = m
    return m


#: the xfail reason of a claim that FAILs at the dry run's size (``--lmc-budget dryrun``)
DRYRUN_PREFIX = "dry run (not the paper's size): "


class ClaimFailed(AssertionError):
    """A claim check whose assertions FAILed (significantly, under :mod:`lmccheck.verdict`)."""


def _finding(item: pytest.Item) -> str | None:
    """The reason of the item's ``lmc_finding`` marker (a known finding at this setting), or None. A GPU
    setting at a reduced budget (``--lmc-budget smoke`` or ``dryrun``) has none: its finding was measured at the
    paper's size, which a reduced run neither confirms nor contradicts."""
    marker = item.get_closest_marker("lmc_finding")
    if marker is None:
        return None
    if item.get_closest_marker("gpu") is not None and item.config.getoption("lmc_budget") != "full":
        return None
    return str(marker.kwargs.get("reason") or (marker.args[0] if marker.args else "known finding"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """After a claim check's body: its verdict from its assertions. FAIL raises :class:`ClaimFailed` (or
    xfails at a setting marked as a known finding); a known finding that PASSes fails the run; INCONCLUSIVE
    passes the pytest outcome and is reported under its own word."""
    result = yield
    m = item.stash.get(_measure_key, None)
    if m is None:
        return result
    try:
        verdict = m.conclude()
    except _verdict.VerdictInputError as exc:
        pytest.fail(str(exc), pytrace=False)
    finding = _finding(item)
    if verdict == _verdict.FAIL:
        if finding is not None:
            pytest.xfail(f"finding: {finding}")
        if item.get_closest_marker("gpu") is not None and item.config.getoption("lmc_budget") == "dryrun":
            # the dry run exercises the code path; a claim failing at its tiny size is no finding and no error
            pytest.xfail(f"{DRYRUN_PREFIX}claim {m.claim} fails at {m.setting}: " + "; ".join(m.failing()))
        raise ClaimFailed(f"claim {m.claim} fails at {m.setting}: " + "; ".join(m.failing()))
    if verdict == _verdict.PASS and finding is not None:
        raise ClaimFailed(
            f"claim {m.claim} at {m.setting} is marked as a known finding but now PASSes: remove the finding "
            f"from its params (was: {finding[:300]})"
        )
    return result


def _outcome_fields(report: pytest.TestReport, call: pytest.CallInfo[None], m: Measurement | None) -> dict[str, Any]:
    """``verdict`` plus ``failure``/``reason`` for a report of a claim item."""
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped:
        if wasxfail is not None and str(wasxfail).startswith(DRYRUN_PREFIX):
            # a claim failing at the dry run's size: reported as FAIL, the run goes on (the code path ran)
            return {"verdict": "FAIL", "reason": str(wasxfail).removeprefix(DRYRUN_PREFIX)}
        if wasxfail is not None:
            # a claim that fails significantly at a setting marked as a known finding: reported as FAIL
            return {"verdict": "FAIL", "known_finding": True, "reason": str(wasxfail).removeprefix("finding: ")}
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        return {"verdict": "SKIP", "reason": reason.removeprefix("Skipped: ")}
    if report.passed:
        verdict = m.verdict if m is not None and m.verdict else "PASS"
        return {"verdict": verdict}
    exc = call.excinfo.value if call.excinfo is not None else None
    failure = call.excinfo.exconly() if call.excinfo is not None else str(report.longrepr)
    if isinstance(exc, ClaimFailed) and m is not None and m.verdict == _verdict.PASS:
        return {"verdict": "XPASS", "failure": failure[:4000]}  # a known finding that passes now
    verdict = "FAIL" if report.when == "call" and isinstance(exc, AssertionError) else "ERROR"
    return {"verdict": verdict, "failure": failure[:4000]}


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    """INCONCLUSIVE claim checks get their own word in pytest's summary (they neither fail nor pass)."""
    if report.when != "call" or not report.passed:
        return None
    record = _record_from(report)
    if record is not None and record.get("verdict") == _verdict.INCONCLUSIVE:
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach the claim record (JSON) to the call report, or to a setup report that did not pass."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "setup":
        item.stash[_setup_duration_key] = report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        try:
            record = _make_record(item, report, call)
            payload = None if record is None else json.dumps(record)
        except Exception as exc:  # noqa: BLE001 - never lose the run to a bad value
            payload = json.dumps(
                {
                    "claim": str(item.stash[_measure_key].claim) if _measure_key in item.stash else "?",
                    "setting": _default_setting(item),
                    "nodeid": base_nodeid(item.nodeid),
                    "verdict": "ERROR",
                    "failure": f"lmccheck could not serialize the record: {exc!r}",
                }
            )
        if payload is not None:
            # A fresh list: the record rides on this report only, not on later phases.
            report.user_properties = [*report.user_properties, (RECORD_KEY, payload)]


def _make_record(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None]) -> dict[str, Any] | None:
    """Finalize the record of a claim item for ``report``; None if it is no claim check."""
    m = item.stash.get(_measure_key, None)
    if m is None:
        if "measure" not in getattr(item, "fixturenames", ()):
            return None
        try:
            claim = _claim_id(item)
        except pytest.UsageError:
            claim = None
        if claim is None:
            return None
        m = Measurement(claim=claim, setting=_default_setting(item), nodeid=base_nodeid(item.nodeid))
    record = m.to_record()
    call_time = report.duration if report.when == "call" else 0.0
    wall = item.stash.get(_setup_duration_key, 0.0) + call_time
    record["wall_time_s"] = round(wall, 4)
    record["measure_time_s"] = round(max(0.0, wall - m.build_time_s - m.load_time_s), 4)
    record.update(_outcome_fields(report, call, item.stash.get(_measure_key, None)))
    finding = _finding(item)
    if finding is not None and record.get("verdict") != "FAIL":
        record["finding_reason"] = finding
    return record


# --------------------------------------------------------------------------- #
# Controller: collect records, write the report, print the table
# --------------------------------------------------------------------------- #
def _record_from(report: pytest.TestReport) -> dict[str, Any] | None:
    """The lmccheck record carried by a report, if any."""
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            return json.loads(value) if isinstance(value, str) else dict(value)
    return None


class _Controller:
    """Controller-side plugin: collects records, writes the report, prints the table.

    Registered only in the process that owns the session (never on an xdist
    worker), so it sees every report exactly once, with or without ``-n``.
    """

    name = "lmccheck-controller"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.start = _now()
        self.records: dict[str, dict[str, Any]] = {}
        self.report_path: Path | None = None
        self.error: str | None = None
        self.expected: dict[str, tuple[str, str]] = {}
        self._store: Any = None
        self.interrupted = False
        self._xdist_collected = False
        self.compare_lines: list[str] | None = None
        self.compare_loud = 0
        self.compare_path: Path | None = None
        option = config.getoption("lmc_compare", None)
        if option:
            self.compare_path = _abs(config, option)
            try:  # a bad path or file is a usage error now, not after an hour of training
                _report.load_report(self.compare_path)
            except ValueError as exc:
                raise pytest.UsageError(f"--lmc-compare: {exc}") from None

    def store(self) -> Any:
        """The run's fixture store (opened once: opening one tidies its stale temporary folders)."""
        if self._store is None:
            from lmccheck.store import Store

            self._store = Store(build_config(self.config).cache)
        return self._store

    def _write_manifest(self, record: dict[str, Any]) -> None:
        """Remember which stored products this check used (the plan of the next run reads it)."""
        keys = record.get("fixture_keys") or []
        if record.get("verdict") in ("SKIP", "NOT RUN", "ERROR") or not record.get("nodeid"):
            return
        try:
            from lmccheck.plan import write_manifest

            cfg = build_config(self.config)
            write_manifest(self.store(), record["nodeid"], cfg.seeds, cfg.device, keys)  # also "no products"
        except Exception as exc:  # noqa: BLE001 - bookkeeping never breaks a claim run
            progress(self.config).warn_once("recording the products of a check for the next plan", exc)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take records from call reports (or setup reports that did not pass)."""
        record = _record_from(report)
        if record is not None:
            # under pytest-xdist the report names the worker that ran the check
            record["worker"] = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)
            self.records[base_nodeid(report.nodeid)] = record
            self._write_manifest(record)
        elif report.when == "teardown" and report.failed and base_nodeid(report.nodeid) in self.records:
            rec = self.records[base_nodeid(report.nodeid)]
            if rec.get("verdict") in ("PASS", "FAIL", "INCONCLUSIVE", "XFAIL", "XPASS"):
                rec["verdict"] = "ERROR"
                rec["failure"] = ((rec.get("failure") or "") + "\nteardown: " + str(report.longrepr))[-4000:]

    def _budget(self) -> str:
        try:
            return build_config(self.config).budget
        except pytest.UsageError:
            return "unknown"

    def _seed_offset(self) -> int | None:
        try:
            return build_config(self.config).seed_offset
        except pytest.UsageError:
            return None

    def _barrier_precision(self) -> str | None:
        """The barriers' precision as run: the option, and what ``auto`` chose on this machine's device (bf16
        autocast on CUDA and on a CPU with native bf16, fp32 elsewhere), which is part of every barrier's key."""
        try:
            cfg = build_config(self.config)
        except pytest.UsageError:
            return None
        if cfg.barrier_precision != "auto":
            return cfg.barrier_precision
        from lmccheck.interpolation import auto_bf16

        return f"auto ({'bf16' if auto_bf16(cfg.device) else 'fp32'} on {cfg.device})"

    def meta(self) -> dict[str, Any]:
        """Report metadata: versions, git commit, device, args, start/end time."""
        import lmccheck

        devices = sorted({r["device"] for r in self.records.values() if r.get("device")})
        if not devices:
            try:
                devices = [describe_device(build_config(self.config).device)]
            except pytest.UsageError:
                devices = ["unknown"]
        threads = sorted({int(r["cpu_threads"]) for r in self.records.values() if r.get("cpu_threads")})
        workers = len({r.get("worker") for r in self.records.values()}) or 1
        return {
            "lmccheck_version": lmccheck.__version__,
            "git_commit": _git_commit(Path(self.config.rootpath)),
            "device": ", ".join(devices),
            "budget": self._budget(),
            "barrier_precision": self._barrier_precision(),
            "seed_offset": self._seed_offset(),
            "processes": f"{workers} worker{'s' if workers > 1 else ''}"
            + (f", {'/'.join(map(str, threads))} CPU thread{'s' if threads != [1] else ''} each" if threads else ""),
            "torch": _dist_version("torch"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "args": [str(a) for a in self.config.invocation_params.args],
            "start": self.start,
            "end": _now(),
        }

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember the selected claim checks, so that a check that never ran is reported as such, and print
        the plan. (Under pytest-xdist the workers collect, not this process: see the hook below.)"""
        for item in session.items:
            if "measure" not in getattr(item, "fixturenames", ()):
                continue
            try:
                claim = _claim_id(item)
            except pytest.UsageError:
                continue
            if claim is not None:
                self.expected[base_nodeid(item.nodeid)] = (claim, _default_setting(item))
        self._announce_plan()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under pytest-xdist: the first worker to finish collecting sends the selected node ids (every worker
        collects the same ones); the claim checks among them are read from their names
        (:func:`claim_from_nodeid`), so the plan is printed and checks that never ran are reported."""
        if self._xdist_collected:
            return
        self._xdist_collected = True
        for nodeid in ids:
            parsed = claim_from_nodeid(nodeid, catalog(self.config))
            if parsed is not None:
                self.expected[base_nodeid(nodeid)] = parsed
        self._announce_plan()

    def _announce_plan(self) -> None:
        if self.expected and not self.config.getoption("collectonly"):
            try:
                self._print_plan()
            except Exception as exc:  # noqa: BLE001 - the plan is information, never a reason to stop
                progress(self.config).warn_once("the run's plan", exc)

    def _print_plan(self) -> None:
        """Before the first check: the store, and the products the selected checks need, how many are
        stored, how long the rest took to build (only when claim checks are selected)."""
        from lmccheck.plan import plan_run, store_size

        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            return
        cfg = build_config(self.config)
        exists = Path(cfg.cache).is_dir()
        store = self.store()
        size = store_size(store) if exists else "empty: every product will be built"
        seeds = (f"{cfg.seeds} seeds per setting" if cfg.budget == "full" else
                 f"{cfg.reduced_seeds} seeds per {cfg.budget} setting, {cfg.seeds} per CPU setting")
        reporter.write_line(f"lmccheck: store {cfg.cache} ({size}); device {cfg.device}; {seeds}")
        if cfg.retrain:
            reporter.write_line("lmccheck plan: --lmc-retrain: every product the checks use is built again")
            return
        checks = [(nodeid, f"{claim} {setting}") for nodeid, (claim, setting) in self.expected.items()]
        for line in plan_run(store, checks, cfg.seeds, cfg.device).lines(_report.fmt_seconds):
            reporter.write_line(f"lmccheck plan: {line}")

    def _not_run(self, session: pytest.Session) -> None:
        for nodeid, (claim, setting) in self.expected.items():
            if nodeid in self.records:
                continue
            reason = ("the run stopped before this check ran or finished (interrupted, or -x after a failure); "
                      "the next run reuses every product already stored")
            self.records[nodeid] = {"claim": claim, "setting": setting, "nodeid": nodeid, "verdict": "NOT RUN",
                                    "reason": reason, "summary": "", "values": {}, "thresholds": {}, "seeds": [],
                                    "fixture_keys": [], "figures": [], "tables": [], "wall_time_s": None}

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        """Ctrl-C: the report written at the end lists the checks that did not run."""
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the report (unless --lmc-no-report or there are no records)."""
        if self.records or self.interrupted:
            self._not_run(session)
        if not self.records or self.config.getoption("lmc_no_report"):
            return
        out_dir = _abs(self.config, self.config.getoption("lmc_report"))
        meta = self.meta()
        self._compare(meta)
        try:
            self.report_path = _report.write_report(list(self.records.values()), out_dir, meta)
            if self.compare_lines is not None:
                text = f"# lmccheck: this run compared with {meta['compared_with']}\n\n" + (
                    "\n".join(f"- {x}" for x in self.compare_lines) if self.compare_lines else "no changes") + "\n"
                atomic_write_bytes(out_dir / "compare.md", text.encode("utf-8"))
        except OSError as exc:
            self.error = f"could not write the lmccheck report to {out_dir}: {exc}"

    def _compare(self, meta: dict[str, Any]) -> None:
        """``--lmc-compare OLD/claims.json``: the changes against an earlier report (read before this run's
        report may overwrite it)."""
        if self.compare_lines is not None or self.compare_path is None:
            return
        old, _ = _report.load_report(self.compare_path)
        changes = _assertions.compare(old, list(self.records.values()))
        self.compare_lines = [c.line() for c in changes]
        self.compare_loud = sum(c.loud for c in changes)
        meta["compared_with"] = str(self.compare_path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the claim table under an "lmccheck claims" header, and the report path."""
        if not self.records:
            return
        tr = terminalreporter
        tr.write_sep("=", "lmccheck claims")
        for line in _report.format_table(list(self.records.values())).splitlines():
            tr.write_line(line)
        timing = _report.format_time_table(list(self.records.values()))
        if timing:
            tr.write_sep("-", "where the time went")
            for line in timing.splitlines():
                tr.write_line(line)
        if self.compare_path is not None:
            if self.compare_lines is None:  # --lmc-no-report: compare all the same
                self._compare({})
            tr.write_sep("-", f"compared with {self.compare_path}")
            for line in self.compare_lines or ["no changes"]:
                tr.write_line(line, red=line.startswith("!!"))
            tr.write_line(f"{self.compare_loud} PASS <-> FAIL flip(s)", red=bool(self.compare_loud))
        pending = _assertions.inconclusive_summary(list(self.records.values()))
        if pending:
            tr.write_sep("-", "INCONCLUSIVE assertions and the seeds each would need")
            for line in pending:
                tr.write_line(line, yellow=True)
        if self.error:
            tr.write_line(self.error, red=True)
        elif self.report_path is not None:
            tr.write_line(f"lmccheck report: {self.report_path}")
        else:
            tr.write_line("lmccheck report not written (--lmc-no-report)")
