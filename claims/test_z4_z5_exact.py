"""Claims Z4 and Z5: Lemma 1 and Theorem 1 of Zhou et al. (2023), checked exactly on generated cases.

Z4 (Lemma 1, App. A.1): "Suppose two modes theta_A, theta_B satisfy LLFC on a dataset D and max{Err_D(theta_A),
Err_D(theta_B)} <= eps, then ... Err_D(alpha theta_A + (1 - alpha) theta_B) <= 2 eps." On the output layer LLFC
says the interpolated network's logits are ``c (alpha f(A) + (1 - alpha) f(B))`` for some ``c > 0``. Hypothesis
generates logits, labels, alpha and c that satisfy this exactly (integer logits, alpha = k / 2^m and c a power
of two, so the arithmetic is exact), and the check asserts the bound on every case. An example counts as
correct when its label's logit is strictly the largest (a tie is an error), the reading under which the
proof's "the linear interpolation ... makes the correct classification if both models make the correct
classification" is true. Near-misses, where the interpolated logits leave the line (LLFC violated), must be
able to break the bound: hypothesis has to find such a case, or the check could not fail.

Z5 (Theorem 1, App. A.2): weak additivity (Definition 3) and commutativity (Definition 4) imply
``f^(l)(alpha theta_A + (1 - alpha) theta_B) = alpha f^(l)(theta_A) + (1 - alpha) f^(l)(theta_B)`` at every layer.
Hypothesis builds pairs of ReLU MLPs (depth 2-4) for which both hold exactly: every pre-activation positive on
the data (weak additivity), and ``W_A^(l) - W_B^(l)`` vanishing on the span of ``H_A^(l-1) - H_B^(l-1)``
(commutativity; the examples are fewer than the width, so that span leaves room). The identity is checked in
float64 at every layer and alpha (:func:`lmccheck.llfc.llfc_decomposition`). Then one condition at a time is
broken at one layer by a controlled amount: the identity must fail there, and the LLFC error must be what the
defect decomposition predicts: ``-alpha (1 - alpha) C`` for a commutativity defect ``C``, the weak-additivity
defect ``D_sigma`` for a sign flip.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from lmccheck.data import Split
from lmccheck.llfc import llfc_decomposition
from lmccheck.models import get_model

#: generated cases per check (derandomized: the same cases every run)
EXAMPLES = 300
#: float64 round-off allowed in Theorem 1's identity, relative to the features' norm
FLOAT64_TOL = 1e-10
#: the LLFC error must match the defect decomposition's prediction to this relative accuracy
PREDICTION_TOL = 1e-8
#: the controlled defects, relative to the broken layer's scale (its mean |weight|, or the unit's mean
#: |pre-activation|)
DEFECTS = (1e-2, 1e-1)
#: a broken condition must leave an LLFC error this many times the identity's float64 tolerance
BROKEN_FACTOR = 1e3
HYP = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
               suppress_health_check=list(HealthCheck))


def _errors(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Examples whose label's logit is not strictly the largest."""
    own = logits.gather(1, labels[:, None])
    others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), -torch.inf)
    return int((own[:, 0] <= others.max(1).values).sum())


@st.composite
def _lemma1_case(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 12))
    c = draw(st.integers(2, 6))
    ints = st.integers(-8, 8)
    fa = torch.tensor([[draw(ints) for _ in range(c)] for _ in range(n)], dtype=torch.float64)
    fb = torch.tensor([[draw(ints) for _ in range(c)] for _ in range(n)], dtype=torch.float64)
    y = torch.tensor([draw(st.integers(0, c - 1)) for _ in range(n)])
    m = draw(st.integers(0, 6))
    alpha = draw(st.integers(0, 2**m)) / 2**m
    scale = 2.0 ** draw(st.integers(-6, 6))
    return {"fa": fa, "fb": fb, "y": y, "alpha": alpha, "scale": scale}


@pytest.mark.claim("Z4")
@pytest.mark.parametrize("case", ["generated-logits"])
def test_z4_lemma1_llfc_on_the_output_bounds_the_error(case: str, measure) -> None:
    """Under LLFC on the logits, the interpolated error is at most Err(A) + Err(B) <= 2 eps on every generated
    case; with the logits off the line, hypothesis finds a case that breaks the bound."""
    stats = {"cases": 0, "worst_ratio": 0.0, "tight": 0}

    @HYP
    @given(_lemma1_case())
    def holds(k: dict) -> None:
        ea, eb = _errors(k["fa"], k["y"]), _errors(k["fb"], k["y"])
        mid = k["scale"] * (k["alpha"] * k["fa"] + (1 - k["alpha"]) * k["fb"])
        em = _errors(mid, k["y"])
        eps = max(ea, eb)
        stats["cases"] += 1
        stats["tight"] += int(em == ea + eb and em > eps)
        if eps:
            stats["worst_ratio"] = max(stats["worst_ratio"], em / eps)
        assert em <= ea + eb <= 2 * eps, (k, ea, eb, em)

    holds()

    @st.composite
    def near_miss(draw: st.DrawFn) -> dict:
        """A case where A and B classify every example correctly (eps = 0), and interpolated logits pushed off
        the line by integer amounts."""
        k = draw(_lemma1_case())
        rows = torch.arange(len(k["y"]))
        for f in (k["fa"], k["fb"]):
            f[rows, k["y"]] = f.max(1).values + 1  # the label's logit strictly the largest
        k["push"] = torch.tensor([[draw(st.integers(-20, 20)) for _ in range(k["fa"].shape[1])]
                                  for _ in range(k["fa"].shape[0])], dtype=torch.float64)
        return k

    def breaks(k: dict) -> bool:
        mid = k["scale"] * (k["alpha"] * k["fa"] + (1 - k["alpha"]) * k["fb"] + k["push"])  # off the line
        return _errors(mid, k["y"]) > 2 * max(_errors(k["fa"], k["y"]), _errors(k["fb"], k["y"]))

    counterexample = find(near_miss(), breaks, settings=HYP)
    measure.values.update({
        "cases": stats["cases"],
        "largest_interpolated_error_over_eps": stats["worst_ratio"],
        "cases_at_err_a_plus_err_b": stats["tight"],
        "near_miss_breaking_the_bound": {
            "n": int(counterexample["fa"].shape[0]), "alpha": counterexample["alpha"],
            "errors_a_b": [_errors(counterexample["fa"], counterexample["y"]),
                           _errors(counterexample["fb"], counterexample["y"])]},
    })
    measure.thresholds.update({"examples": EXAMPLES})
    measure.summary = (f"{stats['cases']} generated cases: interpolated error <= Err(A) + Err(B) <= 2 eps in all "
                       f"(largest ratio to eps {stats['worst_ratio']:.2f}); a near-miss off the line breaks it")


# ---------------------------------------------------------------------------- Z5
def _mlp(depth: int, width: int, d_in: int, classes: int) -> torch.nn.Module:
    return get_model("mlp", width=width, depth=depth, norm="none", in_channels=d_in, input_size=1,
                     num_classes=classes).double()


def _features(state: dict, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
    h, out = x, []
    for i in range(depth):
        h = (h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]).relu()
        out.append(h)
    return out


def _theorem1_pair(depth: int, width: int, n: int, d_in: int, seed: int
                   ) -> tuple[dict, dict, torch.Tensor, list[torch.Tensor]]:
    """A and B satisfying both conditions exactly: every hidden unit is either positive on every example in both
    networks or negative on every example in both (weak additivity; the first quarter of the units are dead, so
    ReLU is not the identity), and (W_A - W_B)(H_A - H_B) = 0 at every layer (commutativity). Returns the states,
    the data and, per hidden layer, the mask of live units."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d_in, generator=g, dtype=torch.float64) + 0.1
    a: dict[str, torch.Tensor] = {}
    dims = [d_in] + [width] * depth
    live = []
    for i in range(depth):
        a[f"layers.{i}.weight"] = torch.rand(width, dims[i], generator=g, dtype=torch.float64) + 0.5
        a[f"layers.{i}.bias"] = torch.rand(width, generator=g, dtype=torch.float64) + 0.1
        mask = torch.ones(width, dtype=torch.bool)
        mask[: max(1, width // 4)] = False
        live.append(mask)
    a["head.weight"] = torch.randn(3, width, generator=g, dtype=torch.float64)
    a["head.bias"] = torch.randn(3, generator=g, dtype=torch.float64)
    b = {k: v.clone() for k, v in a.items()}
    # layer 0 sees the data in both networks: any change commutes; later layers change only off the span
    for i, key in enumerate([*(f"layers.{j}.weight" for j in range(depth)), "head.weight"]):
        w = b[key]
        change = 0.2 * (torch.rand(w.shape, generator=g, dtype=torch.float64) - 0.5)
        if i > 0:
            ha, hb = _features(a, x, depth)[i - 1], _features(b, x, depth)[i - 1]
            u, s, _ = torch.linalg.svd((ha - hb).T, full_matrices=True)
            rank = int((s > 1e-12 * max(float(s.max()) if s.numel() else 0.0, 1.0)).sum())
            basis = u[:, :rank]
            change = change - (change @ basis) @ basis.T  # vanish on span(H_A - H_B)
        b[key] = w + change * (0.3 if i < depth else 1.0)
        if i < depth:  # a shared bias far below zero kills the dead units in both networks, on every example
            h_prev = x if i == 0 else _features(b, x, depth)[i - 1]
            reach = max(float((h_prev @ a[key].T).abs().max()), float((h_prev @ b[key].T).abs().max()))
            h_prev_a = x if i == 0 else _features(a, x, depth)[i - 1]
            reach = max(reach, float((h_prev_a @ a[key].T).abs().max()), float((h_prev_a @ b[key].T).abs().max()))
            for s_ in (a, b):
                s_[f"layers.{i}.bias"][~live[i]] = -(2 * reach + 1)
    return a, b, x, live


def _pre(state: dict, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
    h, out = x, []
    for i in range(depth):
        z = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
        out.append(z)
        h = z.relu()
    return out


def _forward_llfc_error(a: dict, b: dict, x: torch.Tensor, depth: int, alpha: float) -> float:
    """LLFC error by a forward pass of theta_alpha (independent of the decomposition): the largest relative
    ||f^(l)(theta_alpha) - (alpha f^(l)(A) + (1 - alpha) f^(l)(B))|| over the hidden layers."""
    mid = {k: alpha * a[k] + (1 - alpha) * b[k] for k in a}
    fa, fb, fm = _features(a, x, depth), _features(b, x, depth), _features(mid, x, depth)
    return max(float((m - (alpha * p + (1 - alpha) * q)).norm() / (alpha * p + (1 - alpha) * q).norm().clamp_min(1e-300))
               for m, p, q in zip(fm, fa, fb))


@pytest.mark.claim("Z5")
@pytest.mark.parametrize("case", ["generated-relu-mlps"])
def test_z5_theorem1_weak_additivity_and_commutativity_imply_llfc(case: str, measure) -> None:
    """Exact LLFC (c = 1) at every layer and alpha when both conditions hold; a controlled defect in either breaks
    it at that layer by exactly what the decomposition predicts."""
    stats = {"cases": 0, "identity": 0.0, "broken_min": float("inf"), "prediction": 0.0}
    alphas = (0.125, 0.25, 0.5, 0.75)

    def decompose(a: dict, b: dict, x: torch.Tensor, depth: int, width: int) -> dict:
        model = _mlp(depth, width, x.shape[1], 3)
        return llfc_decomposition(model, a, b, Split(x[:, :, None, None], torch.zeros(len(x), dtype=torch.long)),
                                  alphas=alphas, n_examples=None)["per_layer"]

    @HYP
    @given(depth=st.integers(2, 4), width=st.integers(4, 10), d_in=st.integers(2, 5), seed=st.integers(0, 10**6),
           delta=st.sampled_from(DEFECTS), data=st.data())
    def holds(depth: int, width: int, d_in: int, seed: int, delta: float, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, width - 1))
        a, b, x, live = _theorem1_pair(depth, width, n, d_in, seed)
        for za, zb, m in zip(_pre(a, x, depth), _pre(b, x, depth), live, strict=True):  # weak additivity, exactly
            assert bool((za[:, m] > 0).all() and (zb[:, m] > 0).all() and (za[:, ~m] < 0).all() and (zb[:, ~m] < 0).all())
        per = decompose(a, b, x, depth, width)
        worst = max(r["llfc_error"] for layer in per.values() for r in layer.values())
        forward = max(_forward_llfc_error(a, b, x, depth, al) for al in alphas)
        stats["identity"] = max(stats["identity"], worst, forward)
        assert forward <= FLOAT64_TOL, f"Theorem 1's identity fails by {forward:.3g} in a forward pass"
        assert worst <= FLOAT64_TOL, f"Theorem 1's identity fails by {worst:.3g} in the decomposition"
        assert max(r["commutativity"] + r["weak_additivity"] for layer in per.values() for r in layer.values()) \
            <= FLOAT64_TOL
        fa, fb = _features(a, x, depth), _features(b, x, depth)
        # break commutativity at hidden layer l >= 1: change the live units' rows of W_B^(l) along span(H_A - H_B)
        layer = data.draw(st.integers(1, depth - 1))
        diff = fa[layer - 1] - fb[layer - 1]
        direction = diff.sum(0) / diff.sum(0).norm().clamp_min(1e-300)
        broken = {k: v.clone() for k, v in b.items()}
        w = broken[f"layers.{layer}.weight"]
        w += delta * float(w.abs().mean()) * torch.outer(live[layer].double(), direction)
        per_c = decompose(a, broken, x, depth, width)[f"layers.{layer}"]
        for al, r in zip(alphas, per_c.values(), strict=True):
            stats["broken_min"] = min(stats["broken_min"], r["llfc_error"])
            assert r["llfc_error"] > FLOAT64_TOL * BROKEN_FACTOR, "commutativity broken, yet LLFC still holds"
            # E = D_sigma + [relu(Z + r) - relu(Z)] with D_sigma = 0, no error below, and C only on live units
            # (where Z + r stays positive): E = -alpha (1 - alpha) C
            gap = abs(r["llfc_error"] - r["commutativity"]) / r["commutativity"]
            fwd = _forward_llfc_error(a, broken, x, layer + 1, al)  # the forward pass agrees at layer l
            stats["prediction"] = max(stats["prediction"], gap, abs(fwd - r["llfc_error"]) / r["llfc_error"])
            assert r["weak_additivity"] <= FLOAT64_TOL and r["propagated"] <= FLOAT64_TOL
            assert r["identity_residual"] <= PREDICTION_TOL * r["llfc_error"], "the decomposition's identity fails"
            assert gap <= PREDICTION_TOL and abs(fwd - r["llfc_error"]) <= PREDICTION_TOL * r["llfc_error"]
        # break weak additivity at layer l: push one live unit of B below zero on every example (A's stays positive)
        unit = int(torch.nonzero(live[layer])[0])
        flipped = {k: v.clone() for k, v in b.items()}
        zb = _pre(b, x, depth)[layer][:, unit]
        flipped[f"layers.{layer}.bias"][unit] -= float(zb.max()) + delta * float(zb.abs().mean())
        per_w = decompose(a, flipped, x, depth, width)[f"layers.{layer}"]
        for al, r in zip(alphas, per_w.values(), strict=True):
            assert r["weak_additivity"] > FLOAT64_TOL * BROKEN_FACTOR, "the sign flip left weak additivity intact"
            assert r["commutativity"] <= FLOAT64_TOL  # a bias does not enter C
            gap = abs(r["llfc_error"] - r["weak_additivity"]) / r["weak_additivity"]
            fwd = _forward_llfc_error(a, flipped, x, layer + 1, al)
            stats["prediction"] = max(stats["prediction"], gap, abs(fwd - r["llfc_error"]) / r["llfc_error"])
            assert gap <= PREDICTION_TOL, "the LLFC error is not the weak-additivity defect"
            assert abs(fwd - r["llfc_error"]) <= PREDICTION_TOL * r["llfc_error"], "forward pass and decomposition differ"
        stats["cases"] += 1

    holds()
    measure.values.update({
        "cases": stats["cases"], "alphas": list(alphas),
        "largest_relative_llfc_error_with_both_conditions": stats["identity"],
        "smallest_relative_llfc_error_with_a_broken_condition": stats["broken_min"],
        "largest_relative_gap_to_the_decomposition": stats["prediction"],
    })
    measure.thresholds.update({"float64_tol": FLOAT64_TOL, "prediction_tol": PREDICTION_TOL, "examples": EXAMPLES,
                               "defects": list(DEFECTS), "broken_factor": BROKEN_FACTOR})
    measure.summary = (f"{stats['cases']} generated MLP pairs: LLFC error <= {stats['identity']:.1e} with both "
                       f"conditions; >= {stats['broken_min']:.1e} with one broken, matching the decomposition to "
                       f"{stats['prediction']:.1e}")
