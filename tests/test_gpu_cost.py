"""tools/gpu_cost.py: its FLOP counts against hand computations, its sums, and its tables against the claim code."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_cost.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("_gpu_cost_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def stub_nets(gc, monkeypatch):
    """Synthetic network sizes (growing with the width), so that sums over the whole tier run in milliseconds."""

    def fake(arch: str, width: float, dataset: str, norm=None, depth=None):
        base = {"vgg16": 3e8, "resnet20": 4e7, "mlp": 1e6}[arch] * (1.5 if dataset == "cifar10" else 1.0)
        return gc.NetStats(base * width**2, base * width**2 / 10, 1e8 * width**3, 16 if arch == "vgg16" else 20,
                           arch == "vgg16", 10, arch != "mlp")

    monkeypatch.setattr(gc, "net_stats", fake)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_mlp_forward_and_training_flops_match_a_hand_count(gc) -> None:
    from fixtures.recipes import CPU

    forward = 2 * (784 * 512 + 512 * 512 + 512 * 512 + 512 * 10)
    assert gc.net_stats("mlp", 512, "fashion-mnist", None, 3).forward_flops == forward
    ctx = gc.Ctx(CPU["mlp512-fmnist"])  # 5 epochs of the 60k Fashion-MNIST images, checkpoints at 7 times
    work = ctx.train()
    assert (work.trainings, work.epochs) == (1, 5)
    assert work.flops == 3 * forward * 60_000 * 5 + 7 * forward * (10_000 + 10_000)
    spawned = ctx.train(1, 2.0)  # from epoch 2: 3 epochs, checkpoints 2, 3, 5
    assert spawned.flops == 3 * forward * 60_000 * 3 + 3 * forward * 20_000
    assert ctx.barrier(2).flops == 2 * forward * 25 * 10_000
    # a reduced setting's barrier is priced at its own grid: the dry run's 5 alphas on its 16 examples
    from fixtures.recipes import GPU, reduce

    dry = gc.Ctx(reduce(GPU["vgg16-ln-cifar10"], "dryrun"))
    assert dry.barrier(3).flops == 3 * dry.net.forward_flops * 5 * 16
    # activation matching: A and B over the training split, and one float64 cross Gram per hidden layer
    assert ctx.am().flops == 2 * forward * 60_000 + 3 * 2 * 512**2 * 60_000
    assert ctx.wm(4).wm == 4 and ctx.wm().flops == 0 and all(s > 0 for s in ctx.wm().seconds)


def test_a_wider_network_costs_more(gc) -> None:
    flops = [gc.net_stats("resnet20", w, "cifar10").forward_flops for w in (1.0, 2.0, 4.0)]
    assert flops[0] < flops[1] < flops[2]
    assert 3.5 < flops[1] / flops[0] < 4.5  # convolutions dominate: FLOPs grow with the width squared
    vgg = {ds: gc.net_stats("vgg16", 1.0, ds).forward_flops for ds in ("cifar10", "fashion-mnist")}
    assert vgg["cifar10"] > vgg["fashion-mnist"]  # 32x32x3 against 28x28x1 inputs
    fast, slow = gc.net_stats("resnet20", 1.0, "cifar10"), gc.net_stats("resnet20", 2.0, "cifar10")
    assert fast.wm_n3 < slow.wm_n3 and fast.am_gram_flops < slow.am_gram_flops


def test_every_width_costs_more_than_the_one_before(gc, stub_nets) -> None:
    for name, family in gc.WIDTHS_GPU.items():
        per_width = [gc.Ctx(s).train().seconds for s in family.settings]
        assert all(a < b for x, y in zip(per_width, per_width[1:]) for a, b in zip(x, y)), name


@pytest.mark.parametrize("budget", ["full", "smoke"])
def test_the_total_is_the_sum_of_the_rows_and_every_cost_is_positive(gc, stub_nets, budget: str) -> None:
    est = gc.estimate(3 if budget == "full" else 2, budget)
    rows = est.row_work()
    assert set(rows) == set(est.rows) and len(est.rows) >= 7
    total = est.total
    for f in ("trainings", "epochs", "barriers", "simplices", "wm", "am", "features", "flops"):
        assert _close(sum(getattr(w, f) for w in rows.values()), getattr(total, f)), f
    for i in range(len(gc.SCENARIOS)):
        assert _close(sum(w.seconds[i] for w in rows.values()), total.seconds[i])
    assert all(w.flops > 0 and min(w.seconds) > 0 for w in rows.values())
    assert all(a < b for a, b in zip(total.seconds, total.seconds[1:]))  # fast before slow
    for check in est.checks:
        cost = est.cost([check])
        assert 0 < cost.seconds[-1] <= total.seconds[-1] + 1e-6, (check.claim, check.param)
    # a check's products are shared, not added: all checks together cost less than their separate costs
    assert total.seconds[-1] < sum(est.cost([c]).seconds[-1] for c in est.checks)


def test_greedy_choices_fit_their_budget_and_grow_with_it(gc, stub_nets) -> None:
    est = gc.estimate()
    previous: list = []
    for hours in (0.25, 1.0, 8.0, 1e9):
        chosen, work = gc.greedy(est, hours)
        assert work.seconds[-1] <= hours * 3600 + 1e-6
        assert [(c.function, c.param) for c in previous] == [(c.function, c.param) for c in chosen[: len(previous)]]
        previous = chosen
    assert len(previous) == len(est.checks)


def test_shared_products_are_counted_once(gc, stub_nets) -> None:
    est = gc.estimate()
    s3 = [c for c in est.checks if c.claim == "S3" and c.param == "vgg16-ln-cifar10"]
    s8 = [c for c in est.checks if c.claim == "S8" and c.param == "vgg16-ln-cifar10"]
    together, apart = est.cost(s3 + s8), est.cost(s3).trainings + est.cost(s8).trainings
    assert together.trainings == 6 and apart == 12  # the same 3 pairs
    # S11's regime 2 is S4's instability recipe: its pairs are S4's
    regime2 = gc.REGIMES_GPU["vgg16-ln-cifar10"].settings[1]
    assert gc.identity(regime2) == gc.identity(gc.GPU["vgg16-ln-cifar10-instability"])


def _gpu_params() -> set[tuple[str, str, str]]:
    """``(function, claim id, pytest id)`` of every paper-scale GPU parametrization of the claim checks (the
    ``gpu`` mark and ``lmc_budget("full")``: the reduced budgets' versions are collected beside them)."""
    out = set()
    for path in sorted((ROOT / "claims").glob("test_*.py")):
        module = importlib.import_module(f"claims.{path.stem}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            marks = getattr(fn, "pytestmark", [])
            claim = [m.args[0] for m in marks if m.name == "claim"]
            for m in marks:
                if m.name != "parametrize" or not claim:
                    continue
                for p in m.args[1]:
                    marks_of = {(getattr(x, "name", ""), tuple(getattr(x, "args", ())))
                                for x in getattr(p, "marks", ())}
                    if ("gpu", ()) in marks_of and ("lmc_budget", ("full",)) in marks_of:
                        out.add((name, claim[0], p.id))
    return out


def test_every_gpu_check_of_the_claims_is_in_the_table(gc, stub_nets) -> None:

    collected = _gpu_params()
    assert len(collected) == 77  # pytest claims -m gpu --collect-only: 77 checks at the full budget
    est = gc.estimate()
    assert {(c.function, c.claim, c.param) for c in est.checks} == collected
    assert {(c.function, c.claim) for c in gc.CHECKS} == {(f, c) for f, c, _ in collected}


def test_the_tool_s_constants_are_the_claim_code_s(gc) -> None:
    from claims import llfc_pairs as z, test_s5_s6_imp as s56, test_s7_s12_strong_connectivity as s7
    from claims import test_s8_s12_early_permutations as s8, test_s9_pruned_matching as s9
    from claims import test_s10_layerwise_alignment as s10

    assert (gc.S5_GPU_LEVELS, gc.S5_PAPER_REWIND_FRACTION, gc.S6_LEVEL_STEP) == (
        s56.GPU_LEVELS, s56.PAPER_REWIND_FRACTION, s56.S6_LEVEL_STEP)
    assert gc.S6_SERIES_TRAINED == len(s56.S6_SERIES) - 1  # all but IMP on B (S5's own network)
    assert gc.S6_BARRIERS_NEW == len(s56.S6_5A_SERIES) - 1  # all but P B(i) (S5's barrier)
    assert gc.S8_TRAJECTORY_AT == s8.TRAJECTORY_AT
    assert (gc.S9_SPARSITIES, gc.S9_TIME_FRACTIONS) == (s9.SPARSITIES, s9.TIME_FRACTIONS)
    assert (gc.S10_FIRST_REWIND, gc.S10_SPLIT_FRACTIONS, gc.S10_RESTART_SEEDS) == (
        s10.GPU_FIRST_REWIND, s10.GPU_SPLIT_FRACTIONS, s10.RESTART_SEEDS)
    assert gc.S7_SIMPLEX == (s7.SIMPLEX_RESOLUTION, s7.SIMPLEX_EDGE_RESOLUTION) and s7.TRIANGLES == ("to_C", "to_A")
    assert (gc.Z_SPAWN_AT, gc.Z_KINDS) == (z.SPAWN_AT_DEFAULT, len(z.KINDS))
    assert gc.S9_PER_TIME == 16 and len(s9.METHODS) == 2  # p = 0 once, 7 sparsities x 2 methods, a second solve
