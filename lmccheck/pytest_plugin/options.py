"""The plugin's options: the ``lmccheck`` option group (``--lmc-device``, ``--lmc-budget``, ...), their
resolved form :class:`LmcConfig` (the ``lmc_config`` session fixture), and the Hypothesis profiles."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from .. import report as _report
from ..argtypes import nonnegative_int, positive_int
from ..barrier_options import PRECISIONS, BarrierOptions
from .devices import DEVICES, resolve_device

__all__ = [
    "BUDGETS",
    "DEFAULT_SEEDS",
    "REDUCED_SEEDS",
    "LmcConfig",
    "abs_path",
    "add_options",
    "build_config",
    "setup_hypothesis",
]

#: --lmc-budget choices, and the replicates per setting without --lmc-seeds
BUDGETS = ("full", *_report.REDUCED_BUDGETS)
DEFAULT_SEEDS = 3
REDUCED_SEEDS = 2

_config_key = pytest.StashKey["LmcConfig"]()


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
    barrier_precision: str = BarrierOptions.precision
    """Precision of the claims' barrier evaluations (``--lmc-barrier-precision``; part of every barrier's key)."""
    budget: str = "full"
    """``--lmc-budget``: ``full``, ``smoke`` or ``dryrun`` (the GPU settings at a reduced size)."""
    reduced_seeds: int = 2
    """Replicates of a reduced setting (``--lmc-seeds``, else :data:`REDUCED_SEEDS`)."""
    train_together: bool | str = False
    """``--lmc-train-together``: ``"auto"`` (replicates as one ensemble on CUDA), or False."""
    seed_offset: int = 0
    """``--lmc-seed-offset``: replicate r uses the seeds of pair r + offset (0: the default seeds)."""


def add_options(parser: pytest.Parser) -> None:
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
        "--lmc-barrier-precision", choices=PRECISIONS, default=BarrierOptions.precision,
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


def abs_path(config: pytest.Config, path: str) -> Path:
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
        cache=abs_path(config, cache),
        data_root=abs_path(config, data_root) if data_root else None,
        download=bool(config.getoption("lmc_download")),
        seeds=int(config.getoption("lmc_seeds") or DEFAULT_SEEDS),
        reduced_seeds=int(config.getoption("lmc_seeds") or REDUCED_SEEDS),
        budget=str(config.getoption("lmc_budget")),
        train_together="auto" if config.getoption("lmc_train_together") else False,
        seed_offset=int(config.getoption("lmc_seed_offset") or 0),
        report_dir=abs_path(config, config.getoption("lmc_report")),
        retrain=bool(config.getoption("lmc_retrain")),
        barrier_precision=str(config.getoption("lmc_barrier_precision")),
    )
    config.stash[_config_key] = cfg
    return cfg


def setup_hypothesis(config: pytest.Config) -> None:
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
