"""Benchmarks of weight matching: the optimized Greedy-SOBLAP against the textbook one.

Every case runs both implementations (``impl`` = ``fast`` / ``naive``) on the
same pair with the same seed, so one run measures the speedup; both record the
final objective in ``benchmark.extra_info``, and the fast one must reach at
least the naive one's objective.

Pairs:

* planted: ``B = Q[A] + noise`` with random-init weights (mlp 3x512, 3x2048,
  vgg16 1x on CIFAR shapes, resnet20 4x and 16x);
* trained: two independently trained MLPs on Fashion-MNIST (3x512, 3x2048):
  the fixtures' ``mlp_fmnist`` pair when the fixture store already holds it,
  else trained here by a short plain SGD loop (about 85% test accuracy) and
  cached under ``.benchmarks/trained/`` as safetensors, keyed by recipe and
  seed.

Run ``pytest benchmarks/test_matching.py --benchmark-only`` (select with
``-k "fast"`` / ``-k "naive"`` / ``-k mlp512``), or check that it runs with
``--benchmark-disable``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmccheck.fileio import atomic_path
from lmccheck.models import get_model
from lmccheck.permutation import Permutation, PermutationSpec
from lmccheck.weight_matching import matching_objective, weight_matching
from tests.naive_matching import weight_matching_naive

CACHE = Path(__file__).resolve().parent.parent / ".benchmarks" / "trained"
IMPLS: dict[str, Callable[..., Permutation]] = {"fast": weight_matching, "naive": weight_matching_naive}
NOISE = 1e-3  # relative to each entry's std
SEED = 0

PLANTED: dict[str, tuple[str, dict]] = {
    "mlp512": ("mlp", dict(width=512, depth=3, in_channels=1, input_size=28)),
    "mlp2048": ("mlp", dict(width=2048, depth=3, in_channels=1, input_size=28)),
    "vgg16": ("vgg16", dict(width=1.0, in_channels=3, input_size=32)),
    "resnet20x4": ("resnet20", dict(width=4, in_channels=3, input_size=32)),
    "resnet20x16": ("resnet20", dict(width=16, in_channels=3, input_size=32)),
}
#: case -> (mlp width, SGD steps)
TRAINED: dict[str, tuple[int, int]] = {"mlp512-trained": (512, 600), "mlp2048-trained": (2048, 400)}
#: rounds per case (the big ones once)
ROUNDS = {"mlp512": 3, "mlp512-trained": 3, "resnet20x4": 3}

Pair = tuple[PermutationSpec, dict[str, torch.Tensor], dict[str, torch.Tensor]]


def planted_pair(case: str) -> tuple[PermutationSpec, dict[str, torch.Tensor], dict[str, torch.Tensor], Permutation]:
    """Random-init A, B = Q[A] + noise for a random Q, and Q."""
    name, kw = PLANTED[case]
    torch.manual_seed(SEED)
    model = get_model(name, **kw)
    spec = model.permutation_spec()
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    q = Permutation.random(spec, a, SEED + 1)
    gen = torch.Generator().manual_seed(SEED + 2)
    b = {}
    for k, v in q.apply(a).items():
        if v.is_floating_point() and v.numel() > 1:
            v = v + NOISE * v.std() * torch.randn(v.shape, generator=gen)
        b[k] = v
    return spec, a, b, q


def train_mlp(width: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """A 3 x ``width`` MLP trained on Fashion-MNIST by plain SGD with momentum."""
    from lmccheck.data import load_dataset

    data = load_dataset("fashion-mnist").train
    torch.manual_seed(seed)
    model = get_model("mlp", width=width, depth=3, in_channels=1, input_size=28, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def trained_state(width: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """A trained MLP, from the ``.benchmarks/trained`` cache when present."""
    path = CACHE / f"mlp3x{width}-steps{steps}-seed{seed}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # damaged cache file: retrain
            pass
    state = train_mlp(width, steps, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return state


def stored_pair(width: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
    """Final states of replicate 0 of the fixtures' ``mlp_fmnist(width)`` recipe.

    Only when the fixture store (``$LMCCHECK_CACHE`` or ``~/.cache/lmccheck``)
    already holds both runs: this never trains. ``None`` otherwise (or when
    the fixtures' API is not there).
    """
    try:
        from fixtures.recipes import mlp_fmnist, pair_configs

        from lmccheck.store import Store
        from lmccheck.training import Run

        store = Store()
        states = []
        for config in pair_configs(mlp_fmnist(width=width), 0):
            key = store.key("train", config.recipe())
            if not store.contains(key):
                return None
            entry = store.load(key)
            states.append({k: v.clone() for k, v in Run.from_record(config, entry.tensors, entry.meta).final.items()})
        return states[0], states[1]
    except Exception:  # no fixtures / store / entry in this checkout: train locally
        return None


#: where each trained pair came from ("fixture store" / "local"), for extra_info
SOURCES: dict[str, str] = {}


def trained_pair(case: str) -> Pair:
    """The fixture store's trained pair if present, else a quick local pair (cached)."""
    width, steps = TRAINED[case]
    spec = get_model("mlp", width=width, depth=3, in_channels=1, input_size=28).permutation_spec()
    stored = stored_pair(width)
    if stored is not None:
        SOURCES[case] = "fixture store"
        return spec, *stored
    SOURCES[case] = f"local ({steps} SGD steps)"
    return spec, trained_state(width, steps, seed=1), trained_state(width, steps, seed=2)


CASES = list(PLANTED) + list(TRAINED)


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[Pair, Permutation | None]]:
    """Pairs built once per module (lazily), with the planted permutation if any."""
    return {}


@pytest.fixture(scope="module")
def objectives() -> dict[tuple[str, str], float]:
    """Final objective per (case, impl), to compare fast with naive."""
    return {}


def _pair(pairs: dict, case: str) -> tuple[Pair, Permutation | None]:
    if case not in pairs:
        if case in TRAINED:
            pairs[case] = (trained_pair(case), None)
        else:
            spec, a, b, q = planted_pair(case)
            pairs[case] = ((spec, a, b), q)
    return pairs[case]


@pytest.mark.parametrize("impl", ["naive", "fast"])
@pytest.mark.parametrize("case", CASES)
def test_weight_matching(benchmark, pairs, objectives, case: str, impl: str) -> None:
    (spec, a, b), planted = _pair(pairs, case)
    fn = IMPLS[impl]
    p = benchmark.pedantic(fn, args=(spec, a, b), kwargs={"seed": SEED}, rounds=ROUNDS.get(case, 1), iterations=1)
    obj = matching_objective(spec, a, b, p)  # exact, outside the timed call
    history = p.stats["objective"]
    benchmark.extra_info.update(
        case=case,
        impl=impl,
        final_objective=obj,
        initial_objective=p.stats["initial_objective"],
        sweeps=p.stats["sweeps"],
        solves=p.stats["solves"],
        skipped=p.stats["skipped"],
        converged=p.stats["converged"],
        recovered_planted=None if planted is None else bool(p == planted.inverse()),
        pair=SOURCES.get(case, "planted"),
    )
    objectives[(case, impl)] = obj
    assert all(y >= x for x, y in zip(history, history[1:], strict=False)), "objective decreased"
    assert obj >= p.stats["initial_objective"] - 1e-6 * abs(obj)
    if (case, "fast") in objectives and (case, "naive") in objectives:
        del pairs[case]  # both ran: free the memory
        fast, naive = objectives[(case, "fast")], objectives[(case, "naive")]
        assert fast >= naive - 1e-6 * abs(naive), f"fast objective {fast} below naive {naive}"


@pytest.mark.parametrize("starts", ["am", "am+wm+barycenter"])
def test_commutativity_matching(benchmark, starts: str) -> None:
    """Commutativity matching (Zhou et al. Eq. 9, lmccheck.commutativity_matching) on the trained mlp 3x512 pair,
    1000 Fashion-MNIST training examples: from activation matching's permutation only (the default; AM computed
    outside the timing), or also from weight matching's and from the barycenter. Records J at every start and
    after each phase (relaxation, 2-opt), the swaps taken and whether the result is a 2-opt local optimum."""
    from lmccheck.commutativity_matching import commutativity_matching
    from lmccheck.data import load_dataset
    from lmccheck.activation_matching import activation_matching

    spec, a, b = trained_pair("mlp512-trained")
    model = get_model("mlp", width=512, depth=3, in_channels=1, input_size=28)
    x = load_dataset().train.x[:1000]
    init = activation_matching(model, a, b, x)
    kwargs: dict = {"init": init}
    if starts != "am":
        kwargs.update(starts=[weight_matching(spec, a, b, seed=SEED)], barycenter=True)
    p = benchmark.pedantic(commutativity_matching, args=(model, a, b, x), kwargs=kwargs, rounds=1, iterations=1)
    st = p.stats
    benchmark.extra_info.update(
        starts=starts, winner=st["start"], objective_init=st["objective_init"], objective_final=st["objective_final"],
        local_optimum=st["local_optimum"], pair=SOURCES.get("mlp512-trained", "planted"),
        per_start={n: {k: r[k] for k in ("objective_start", "objective_fw", "objective_final", "accepted_fw",
                                         "accepted_swaps", "two_opt_passes", "seconds_fw", "seconds_two_opt")}
                   for n, r in st["starts"].items()},
        first_step_slope=st["first_step_slope"])
    hist = st["objective"]
    assert all(later < earlier for earlier, later in zip(hist, hist[1:]))
    assert st["objective_final"] == hist[-1] <= st["objective_init"]
    assert all(r["objective_final"] <= r["objective_fw"] <= r["objective_start"] for r in st["starts"].values())
