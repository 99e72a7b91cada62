"""Claims S7 and S12 (second half): strong linear connectivity through a third network (Sharma et al. §5.3,
Fig. 3, App. G, Fig. 14).

§5.3's procedure, per width and replicate: "1. Independently train 3 networks A, B, C. 2. Align A and B with
C to get P_{A->C}[A] and P_{B->C}[B]. 3. Compute the barriers between P_{A->C}[A] and P_{B->C}[B]", with
weight matching (WM) and activation matching (AM), against aligning A and B directly (A vs P_{B->A}[B]) and
not at all (A vs B). Loss and error barriers, train and test (Fig. 14 rows 1-4), 25 alphas on 10k examples.

S7, the paper's sentences (judged on the test split, loss and error barriers, for WM and AM; train recorded):

* §5.3: "as the width of the networks increases, the loss barrier obtained by indirect alignment between
  networks A and B decreases" (the abstract: "barriers decrease with increasing network width when
  interpolating among three networks"): the least-squares slope of the indirect barrier on log2(width), over
  every triple, is below 0 (Student t interval, df = triples - 2, plus the test-set noise of the error
  barriers);
* §5.3: "indirect alignment still results in much higher barriers than is achievable by aligning A and B
  directly": at every width, the triple-paired contrast indirect - direct is above 0 ("higher"), and the
  paired ratio direct / indirect lies in an indifference zone's "small" side ("much": the paper gives no
  number, see :data:`MUCH_HIGHER`);
* App. G: "we significantly reduce the loss/error barrier with indirect alignment for wide networks": at the
  wide widths (:func:`_wide`), the paired contrast unaligned - indirect is above 0; narrower widths are
  recorded, not judged (the paper says it for wide networks only).

The triples are few (3 or 2 per width at CPU scale, the paper averages 5): the per-width contrasts pool
their seed spread over the widths.

Beyond the paper: Definition 4.2 is about sets of networks, yet §5.3 measures pairs. lmccheck also measures
the barrier over the whole triangle of three aligned networks (:meth:`fixtures.lab.Lab.simplex`: the maximum
over a barycentric grid of the loss or error minus the plane through the three vertices' values), for the
triangle aligned to C, {P_{A->C}[A], P_{B->C}[B], C}, and the triangle aligned to A,
{A, P_{B->A}[B], P_{C->A}[C]}. The edges are evaluated on the pairwise 25-alpha grid and the interior at
resolution 6 (its 10 interior points include the centroid). It tests whether the triangle's hull is
convex-connected, a stronger property than SLC's pairwise connectivity (App. B), and is recorded, not
judged. As a consistency check of the measurement (a failure is a bug, never a finding: it raises
:class:`~claims.rules.MeasurementBug`), each edge of the triangle reproduces the pairwise curve of that pair
bit for bit, so the simplex barrier is at least the largest barrier along its edges.

S12, second half (App. G, Fig. 14 row 5): "We find that direct and indirect alignment do not produce similar
permutations, and that increasing width does not make the permutations more similar." The direct
permutation P_{B->A} and the indirect one P_{A->C}^-1 o P_{B->C}: their fraction of fixed points lies on
the "not similar" side of an indifference zone at every width (:data:`NOT_SIMILAR`), and its slope on
log2(width) is at most :func:`_more_similar_delta` per doubling (an equivalence: "does not make ... more
similar"). The record holds the total and per-layer fractions with their random-permutation expectations
(1 / n_i per layer, G / N in total).

Bit-identical edges need the loop evaluation engine (the default, ``engine="auto"``): the vmap engine mixes
three networks as a sum even where one weight is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from scipy import stats

from fixtures import Lab, Triple
from fixtures.recipes import WIDTHS_CPU, WIDTHS_GPU, Setting, WidthFamily
from lmccheck.barrier_curves import BarrierResult, SimplexResult
from lmccheck.barrier_options import DEFAULT_ALPHAS
from lmccheck.matching import fixed_point_stats
from lmccheck.permutation import Permutation
from lmccheck.figures import line_panel
from lmccheck.report import pct
from lmccheck.verdict import Above, Below, Judgement, Negligible, Rule, Source, Within, paper, reading

from .rules import MeasurementBug, contrast_noise, error_barrier_se, mean_noise, mean_std
from .settings import params

METHODS = ("weight", "activation")
SHORT = {"weight": "WM", "activation": "AM"}
COLORS = {"weight": "C0", "activation": "C1"}
SPLITS = ("test", "train")
KINDS = ("loss", "error")
SERIES = ("unaligned", *(f"{d}_{m}" for m in METHODS for d in ("direct", "indirect")))
#: the split the assertions read (train barriers are recorded and plotted)
ASSERTED_SPLIT = "test"
#: the pairwise grid of Eq. (1): 25 alphas, i.e. 24 steps along every edge of a simplex (a setting with fewer
#: alphas, the dry run's, steps its own pairwise grid: :func:`_edge_resolution`)
SIMPLEX_EDGE_RESOLUTION = DEFAULT_ALPHAS - 1
#: the interior of a triangle at steps of 1/6: 10 interior points, the centroid among them (each costs one
#: evaluation on 10k examples, like one alpha of a pairwise curve)
SIMPLEX_RESOLUTION = 6
#: the simplex barrier may fall below an edge's barrier only by the rounding of the reference plane
#: (sum_i w_i v_i against (1 - a) v_0 + a v_1 in float64)
PLANE_ROUNDING = 1e-12
#: the triangles measured: aligned to C (§5.3's reference) and aligned to A (the direct one). By symmetry the
#: two are alike in distribution, so the CPU tier, whose budget the triangles would double, measures the first
TRIANGLES = ("to_C", "to_A")
TRIANGLES_CPU = ("to_C",)
FAMILIES_GPU = list(WIDTHS_GPU)

# ---------------------------------------------------------------------------- sources
FALLS_LOSS = paper("as the width of the networks increases, the loss barrier obtained by indirect alignment "
                   "between networks A and B decreases", "§5.3, Fig. 3")
FALLS_ERROR = paper("by showing that barriers decrease with increasing network width when interpolating among "
                    "three networks", "abstract; Fig. 14 rows 3-4 (error barriers)")
ABOVE_DIRECT = paper("indirect alignment still results in much higher barriers than is achievable by aligning A "
                     "and B directly ... This failure to find comparable error barriers to the direct alignment",
                     "§5.3, Fig. 3")
BELOW_UNALIGNED = paper("The plots show that we significantly reduce the loss/error barrier with indirect "
                        "alignment for wide networks", "App. G, Fig. 14")
#: "much higher" has no number in the paper. lmccheck's reading, on the paired ratio direct / indirect of each
#: triple: at most 1/2 (the indirect barrier at least double the direct one, so the gap is as large as all that
#: direct alignment leaves) is clearly "much higher"; above 4/5 (indirect within 25% of direct) is read as the
#: "comparable" of the paper's next sentence (which gives no number), clearly not "much higher"; between is undecided
MUCH_HIGHER = Negligible(clearly=0.5, clearly_not=0.8)
MUCH_SOURCE = reading(
    "'much higher' (§5.3) has no number: on direct/indirect per triple, <= 1/2 (indirect at least double direct, "
    "a gap as large as the whole direct barrier) is clearly 'much higher'; >= 4/5 (indirect within 25% of "
    "direct) lmccheck reads as the 'comparable error barriers' of §5.3's next sentence, clearly not")
WIDE_SOURCE = reading("App. G's 'for wide networks' names no width: lmccheck takes the wider half of the "
                      "family's widths (the upper half of the grid, the widest included)")
#: App. G: "direct and indirect alignment do not produce similar permutations". lmccheck's reading of
#: "similar" (no number in the paper): permutations that agree on most units (>= 1/2) are clearly similar;
#: agreeing on at most a quarter (3 of 4 units mapped differently) is clearly not similar
NOT_SIMILAR = Negligible(clearly=0.25, clearly_not=0.5)
NOT_SIMILAR_SOURCE = reading(
    "'similar permutations' (App. G) has no number: agreeing on most units (a fixed-point fraction >= 1/2) is "
    "clearly similar; on at most a quarter (3 of 4 units mapped differently) clearly not similar")
SIMILAR_PAPER = paper("We find that direct and indirect alignment do not produce similar permutations, and that "
                      "increasing width does not make the permutations more similar", "App. G, Fig. 14 row 5")


# ---------------------------------------------------------------------------- measurement
def _perms(lab: Lab, method: str, t: Triple) -> dict[str, Permutation]:
    """The permutations of one triple: direct B->A, B->C and A->C (as ``lab.match`` returns them, P[x] ~ ref)."""
    return {
        "B->A": lab.match(method, t.a, t.b),
        "A->C": lab.match(method, t.c, t.a),
        "B->C": lab.match(method, t.c, t.b),
    }


def _indirect(p: dict[str, Permutation]) -> Permutation:
    """P_{A->C}^-1 o P_{B->C}: B into A's coordinates through C."""
    return p["A->C"].inverse().compose(p["B->C"])


def _direct_over_indirect(direct: float, indirect: float) -> float:
    """direct / indirect of one triple; where the indirect barrier is 0 (no bump on the indirect path, possible
    on a few hundred test examples) the indirect pair is not higher at all, read as the ratio of two equal
    barriers, 1 (not "much higher"), rather than a division by zero."""
    return direct / indirect if indirect > 0 else 1.0


def _value(res: BarrierResult | SimplexResult, kind: str) -> float:
    return float(getattr(res, f"{kind}_barrier"))


def _edge_resolution(setting: Setting) -> int:
    """Steps along a simplex's edge: those of the setting's pairwise grid, so that the edges are its curves."""
    return setting.alphas - 1


def _triangles(lab: Lab, method: str, t: Triple, p: dict[str, Permutation], which: tuple[str, ...],
               setting: Setting) -> dict[str, tuple[SimplexResult, tuple[BarrierResult, ...]]]:
    """Per triangle in ``which``: the simplex result and the pairwise barriers of its edges (0-1, 0-2, 1-2),
    each taken in the simplex's vertex order so that the two evaluations agree to the bit."""
    out: dict[str, tuple[SimplexResult, tuple[BarrierResult, ...]]] = {}
    kw = {"split": "test", **setting.curve}
    grid: dict[str, Any] = {"resolution": SIMPLEX_RESOLUTION, "edge_resolution": _edge_resolution(setting),
            "n_examples": setting.eval_examples}
    if "to_C" in which:  # {P_{A->C}[A], P_{B->C}[B], C}: its A-B edge is the indirect pair
        out["to_C"] = (lab.simplex([t.a, t.b, t.c], perms=[p["A->C"], p["B->C"], None], **grid),
                       (lab.barrier(t.a, t.b, perm_a=p["A->C"], perm=p["B->C"], **kw),
                        lab.barrier(t.a, t.c, perm_a=p["A->C"], **kw),
                        lab.barrier(t.b, t.c, perm_a=p["B->C"], **kw)))
    if "to_A" in which:  # {A, P_{B->A}[B], P_{C->A}[C]}: its A-B edge is the direct pair
        p_ca = lab.match(method, t.a, t.c)
        out["to_A"] = (lab.simplex([t.a, t.b, t.c], perms=[None, p["B->A"], p_ca], **grid),
                       (lab.barrier(t.a, t.b, perm=p["B->A"], **kw),
                        lab.barrier(t.a, t.c, perm=p_ca, **kw),
                        lab.barrier(t.b, t.c, perm_a=p["B->A"], perm=p_ca, **kw)))
    return out


def _consistency(simplex: SimplexResult, edges: tuple[BarrierResult, ...]) -> list[str]:
    """Exact checks: the simplex's edges are the pairwise curves; its barrier bounds theirs."""
    out = []
    for (i, j), pair in zip(((0, 1), (0, 2), (1, 2)), edges):
        own = simplex.edge(i, j)
        if own.alphas != pair.alphas or own.loss != pair.loss or own.error != pair.error:
            worst = max((abs(x - y) for x, y in zip(own.loss + own.error, pair.loss + pair.error)), default=math.inf)
            out.append(f"edge {i}-{j} differs from its pairwise curve (max |diff| {worst:.3g})")
    for kind in KINDS:
        largest = max(_value(e, kind) for e in edges)
        if not _value(simplex, kind) >= largest - PLANE_ROUNDING:
            out.append(f"{kind} simplex barrier {_value(simplex, kind):.6g} below its largest edge {largest:.6g}")
    return out


def _collect_barriers(family: WidthFamily, lab: Lab, n_seeds: int) -> dict:
    """Per series, split and kind: ``[width][triple]`` barriers; the test error barriers' test-set noise; the
    simplex barriers and their largest edges; the consistency messages; the triples per width."""
    widths = list(family.widths)
    triangles = TRIANGLES if family.gpu else TRIANGLES_CPU
    # per series, split and kind (simplex and edge_max: per triangle and method, and kind): [width][triple]
    bars: dict[str, dict[str, dict[str, list[list[float]]]]] = {
        s: {sp: {k: [[] for _ in widths] for k in KINDS} for sp in SPLITS} for s in SERIES}
    error_se: dict[str, list[list[float]]] = {s: [[] for _ in widths] for s in SERIES}
    simplex: dict[str, dict[str, list[list[float]]]] = {
        f"{tri}_{m}": {k: [[] for _ in widths] for k in KINDS} for tri in triangles for m in METHODS}
    edge_max: dict[str, dict[str, list[list[float]]]] = {
        key: {k: [[] for _ in widths] for k in KINDS} for key in simplex}
    consistency: list[str] = []
    counts: list[int] = []
    for i, setting in enumerate(family.settings):
        triples = lab.triples(setting.config, family.seeds_at(i, n_seeds))
        counts.append(len(triples))
        for t in triples:
            results: dict[str, dict[str, BarrierResult]] = {"unaligned": {
                sp: lab.barrier(t.a, t.b, split=sp, **setting.curve) for sp in SPLITS}}
            for m in METHODS:
                p = _perms(lab, m, t)
                for sp in SPLITS:
                    results.setdefault(f"direct_{m}", {})[sp] = lab.barrier(
                        t.a, t.b, perm=p["B->A"], split=sp, **setting.curve)
                    results.setdefault(f"indirect_{m}", {})[sp] = lab.barrier(
                        t.a, t.b, perm_a=p["A->C"], perm=p["B->C"], split=sp, **setting.curve)
                for tri, (sim, edges) in _triangles(lab, m, t, p, triangles, setting).items():
                    consistency += [f"w={widths[i]:g}, seed {t.replicate}, {SHORT[m]}, {tri}: {msg}"
                                    for msg in _consistency(sim, edges)]
                    for k in KINDS:
                        simplex[f"{tri}_{m}"][k][i].append(_value(sim, k))
                        edge_max[f"{tri}_{m}"][k][i].append(max(_value(e, k) for e in edges))
            for s in SERIES:
                error_se[s][i].append(error_barrier_se(results[s][ASSERTED_SPLIT]))
                for sp in SPLITS:
                    for k in KINDS:
                        bars[s][sp][k][i].append(_value(results[s][sp], k))
    return {"widths": widths, "counts": counts, "triangles": triangles, "bars": bars, "error_se": error_se,
            "simplex": simplex, "edge_max": edge_max, "consistency": consistency}


def _collect_fixed_points(family: WidthFamily, lab: Lab, n_seeds: int) -> dict:
    """Per method, ``[width][triple]`` fixed-point fractions of the direct vs the indirect permutation; the
    per-group means and spreads; the random-permutation expectations and chance noise per width."""
    widths = list(family.widths)
    frac: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    per_group: dict[str, list[dict[str, list[float]]]] = {m: [] for m in METHODS}
    random_per_group: list[dict[str, float]] = []
    random_fraction: list[float] = []
    chance_sd: list[float] = []
    counts: list[int] = []
    for i, setting in enumerate(family.settings):
        triples = lab.triples(setting.config, family.seeds_at(i, n_seeds))
        counts.append(len(triples))
        for m in METHODS:
            frac[m].append([])
            groups_acc: dict[str, list[float]] = {}
            for t in triples:
                p = _perms(lab, m, t)
                fp = fixed_point_stats(p["B->A"], _indirect(p))
                frac[m][i].append(fp["fraction"])
                for g, v in fp["per_group_fraction"].items():
                    groups_acc.setdefault(g, []).append(v)
                if m == METHODS[0] and t.replicate == triples[0].replicate:
                    random_fraction.append(fp["random_expectation_fraction"])
                    random_per_group.append({g: 1.0 / n for g, n in fp["sizes"].items()})  # 1 / n_i
                    # random fixed points are about Poisson(1) per group: the fraction's sd is about sqrt(G) / N
                    chance_sd.append(len(fp["sizes"]) ** 0.5 / sum(fp["sizes"].values()))
            per_group[m].append(groups_acc)
    return {"widths": widths, "counts": counts, "frac": frac, "per_group": per_group,
            "random_per_group": random_per_group, "random_fraction": random_fraction, "chance_sd": chance_sd}


# ---------------------------------------------------------------------------- judging helpers
def _wide(widths: Sequence[float]) -> list[int]:
    """The indices of the 'wide networks' of App. G: the wider half of the family's widths."""
    return list(range(len(widths) // 2, len(widths)))


def _label(w: float) -> str:
    return f"width {w:g}"


def _points(widths: Sequence[float], per_width: Sequence[Sequence[float]],
            idx: Sequence[int]) -> dict[str, list[float]]:
    return {_label(widths[i]): list(per_width[i]) for i in idx}


def _noise(widths: Sequence[float], idx: Sequence[int], measured: bool, fn) -> dict[str, float]:
    """Per width label in ``idx``: ``fn(i)``, the test-set noise of that width's contrast (0 where the
    measurement has none we can compute: the loss barriers)."""
    return {_label(widths[i]): float(fn(i)) if measured else 0.0 for i in idx}


def _paired(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[list[float]]:
    """Per width, the triple-paired differences a - b."""
    return [[x - y for x, y in zip(xa, xb, strict=True)] for xa, xb in zip(a, b, strict=True)]


def _ratio_noise(num: Sequence[float], den: Sequence[float], se_num: Sequence[float],
                 se_den: Sequence[float]) -> float:
    """The test-set standard error of the seed mean of num / den (delta method per triple; the examples are
    shared, so it does not average out over the triples: root mean square)."""
    # a zero denominator has no delta-method noise: its ratio is read as 1 (_direct_over_indirect)
    ses = [math.hypot(sn / d, n * sd / d**2) if d > 0 else 0.0
           for n, d, sn, sd in zip(num, den, se_num, se_den, strict=True)]
    return mean_noise(ses)


def _expect_slope(measure, name: str, rule: Rule, widths: Sequence[float], y: Sequence[Sequence[float]],
                  noise_per_width: Sequence[float], source: Source, **kw) -> Judgement:
    """The least-squares slope of ``y`` (``[width][triple]``) on log2(width) over every triple."""
    return measure.expect_slope(name, rule, [math.log2(w) for w in widths], y, source, noise=noise_per_width, **kw)


def _halfwidths(per_width: Sequence[Sequence[float]], level: float = 0.95) -> list[float]:
    """Per width, the half-width of the Student t interval of the mean over its triples (0 with one triple)."""
    out = []
    for xs in per_width:
        n = len(xs)
        out.append(float(stats.t.ppf(0.5 + level / 2, n - 1)) * mean_std(xs)[1] / math.sqrt(n) if n > 1 else 0.0)
    return out


def _means(per_width: Sequence[Sequence[float]]) -> list[float]:
    return [mean_std(xs)[0] for xs in per_width]


def _seeds_note(family: WidthFamily, counts: list[int], n_seeds: int) -> str:
    per = ", ".join(f"{w:g}: {c}" for w, c in zip(family.widths, counts))
    return (f"triples per width {per} (" + ("CPU budget: fewer at the widest widths; " if family.seeds else "")
            + f"--lmc-seeds {n_seeds}; the paper averages 5 replicates)")


# ---------------------------------------------------------------------------- S7
@pytest.mark.claim("S7")
@pytest.mark.parametrize("family", params(
    list(WIDTHS_CPU), FAMILIES_GPU, cpu_table=WIDTHS_CPU, gpu_table=WIDTHS_GPU,
))
def test_s7_indirect_alignment_improves_with_width_but_stays_above_direct(
    family: WidthFamily, lab: Lab, n_seeds: int, measure
) -> None:
    """For WM and AM, test loss and error barriers: the indirect barrier's slope on log2(width) is below 0; at
    every width indirect - direct is above 0 (paired per triple) and direct / indirect is small ("much
    higher", an indifference zone); at the wide widths unaligned - indirect is above 0. The triangle's simplex
    barrier is recorded and bounds its edges exactly (a bug otherwise)."""
    data = _collect_barriers(family, lab, n_seeds)
    widths, bars, se = data["widths"], data["bars"], data["error_se"]
    every_w, wide = list(range(len(widths))), _wide(widths)
    narrow = [i for i in every_w if i not in wide]
    for m in METHODS:
        for k in KINDS:
            ind, drc, una = (bars[s][ASSERTED_SPLIT][k] for s in (f"indirect_{m}", f"direct_{m}", "unaligned"))
            # test-set noise: the error barriers' binomial noise; the loss barrier's is not measured (no
            # per-example losses are kept), so 0 there
            err = k == "error"
            se_ind, se_drc, se_una = (se[s] for s in (f"indirect_{m}", f"direct_{m}", "unaligned"))
            tag = f"{SHORT[m]} test {k}"
            _expect_slope(measure, f"{tag}: indirect barrier falls with width (slope per doubling < 0)", Below(0.0),
                          widths, ind, [mean_noise(x) if err else 0.0 for x in se_ind],
                          FALLS_LOSS if k == "loss" else FALLS_ERROR)
            measure.expect(f"{tag}: indirect - direct > 0 at every width", Above(0.0),
                           _points(widths, _paired(ind, drc), every_w), ABOVE_DIRECT, over="every", pool=True,
                           noise=_noise(widths, every_w, err,
                                        lambda i: contrast_noise(se_ind[i], se_drc[i])))  # noqa: B023
            ratio = [[_direct_over_indirect(d, x) for d, x in zip(dd, xx, strict=True)]
                     for dd, xx in zip(drc, ind, strict=True)]
            measure.expect(f"{tag}: indirect 'much higher': direct / indirect small at every width", MUCH_HIGHER,
                           _points(widths, ratio, every_w), MUCH_SOURCE, over="every", pool=True,
                           noise=_noise(widths, every_w, err,
                                        lambda i: _ratio_noise(drc[i], ind[i], se_drc[i], se_ind[i])),  # noqa: B023
                           note="the paper's sentence: " + ABOVE_DIRECT.describe())
            below = _paired(una, ind)

            def below_noise(i: int) -> float:
                return contrast_noise(se_una[i], se_ind[i])  # noqa: B023

            measure.expect(f"{tag}: unaligned - indirect > 0 at every wide width "
                           f"({', '.join(f'{widths[i]:g}' for i in wide)})", Above(0.0),
                           _points(widths, below, wide), BELOW_UNALIGNED, over="every", pool=True,
                           noise=_noise(widths, wide, err, below_noise), note="wide: " + WIDE_SOURCE.describe())
            if narrow:
                measure.expect(f"{tag}: unaligned - indirect > 0 at the narrower widths "
                               f"({', '.join(f'{widths[i]:g}' for i in narrow)})", Above(0.0),
                               _points(widths, below, narrow), BELOW_UNALIGNED, over="every", pool=True,
                               noise=_noise(widths, narrow, err, below_noise), decides=False,
                               note="recorded: App. G states the reduction for wide networks only")
    _render_s7(family, measure, data, n_seeds)
    if data["consistency"]:
        raise MeasurementBug("the simplex disagrees with its pairwise edges: " + "; ".join(data["consistency"][:4]))


def _render_s7(family: WidthFamily, measure, data: dict, n_seeds: int) -> None:
    """Values (raw per-triple numbers), the figure (means with 95% t intervals over triples) and the summary."""
    widths, bars, simplex, edge_max = data["widths"], data["bars"], data["simplex"], data["edge_max"]
    edge = _edge_resolution(family.settings[0])
    trend = {}
    for m in METHODS:
        for k in KINDS:
            ind = bars[f"indirect_{m}"][ASSERTED_SPLIT][k]
            drc = bars[f"direct_{m}"][ASSERTED_SPLIT][k]
            means = _means(ind)
            trend[f"{m}_{k}"] = {
                "means": means,
                "spearman_rho_width_mean": float(stats.spearmanr(widths, means).statistic)
                if len(set(means)) > 1 else 0.0,
                "indirect_over_direct": [a / b if b > 0 else math.inf for a, b in zip(means, _means(drc))],
            }
    measure.values.update({
        "family": family.name,
        "widths": widths,
        "seeds_per_width": data["counts"],
        "seeds_note": _seeds_note(family, data["counts"], n_seeds),
        "asserted_split": ASSERTED_SPLIT,
        "wide_widths": [widths[i] for i in _wide(widths)],
        "triangles": list(data["triangles"]),
        "triangles_note": None if family.gpu else "CPU tier: the triangle aligned to C only (budget)",
        "simplex_grid": {"edge_resolution": edge, "interior_resolution": SIMPLEX_RESOLUTION,
                         "points": 3 * edge + (SIMPLEX_RESOLUTION - 1) * (SIMPLEX_RESOLUTION - 2) // 2},
        "per_seed": {"barriers": bars, "error_barrier_se_test": data["error_se"], "simplex": simplex,
                     "simplex_largest_edge": edge_max},
        "indirect_trend": trend,
        "consistency_mismatches": data["consistency"],
    })
    measure.thresholds.update({"much_higher_direct_over_indirect": [MUCH_HIGHER.clearly, MUCH_HIGHER.clearly_not],
                               "plane_rounding": PLANE_ROUNDING, "simplex_edge_resolution": edge,
                               "simplex_resolution": SIMPLEX_RESOLUTION})

    def panel(split: str, kind: str) -> dict:
        series, styles, colors, yerr = {}, {}, {}, {}
        for m in METHODS:
            for d, style in (("direct", "solid"), ("indirect", "dashed")):
                label = f"{d} {SHORT[m]}"
                series[label] = (widths, _means(bars[f"{d}_{m}"][split][kind]))
                yerr[label] = _halfwidths(bars[f"{d}_{m}"][split][kind])
                styles[label], colors[label] = style, COLORS[m]
            if split == "test":
                label = f"simplex to C {SHORT[m]}"
                series[label] = (widths, _means(simplex[f"to_C_{m}"][kind]))
                yerr[label] = _halfwidths(simplex[f"to_C_{m}"][kind])
                styles[label], colors[label] = "dashdot", COLORS[m]
        return line_panel(series, title=f"{split} {kind} barrier", xlabel="width", ylabel=f"{kind} barrier",
                          xscale="log", yerr=yerr, styles=styles, colors=colors)

    unaligned = line_panel({f"{sp} error": (widths, _means(bars["unaligned"][sp]["error"])) for sp in SPLITS},
                           title="unaligned (A vs B)", xlabel="width", ylabel="error barrier", xscale="log",
                           yerr={f"{sp} error": _halfwidths(bars["unaligned"][sp]["error"]) for sp in SPLITS},
                           styles={"train error": "dotted"})
    measure.figure("barriers_vs_width",
                   title=f"S7 {family.name}: direct (solid) vs indirect (dashed), mean and 95% t interval over triples",
                   panels=[*(panel(sp, k) for sp in SPLITS for k in KINDS), unaligned])

    def span(series: list[list[float]]) -> str:
        return f"{pct(mean_std(series[0])[0])} -> {pct(mean_std(series[-1])[0])}"

    err = {s: bars[s][ASSERTED_SPLIT]["error"] for s in SERIES}
    measure.summary = (
        f"test error barrier, width {widths[0]:g} -> {widths[-1]:g}: indirect "
        + ", ".join(f"{SHORT[m]} {span(err[f'indirect_{m}'])}" for m in METHODS)
        + "; direct " + ", ".join(f"{SHORT[m]} {span(err[f'direct_{m}'])}" for m in METHODS)
        + f"; unaligned {span(err['unaligned'])}; simplex to C "
        + ", ".join(f"{SHORT[m]} {span(simplex[f'to_C_{m}']['error'])}" for m in METHODS)
        + f"; triples {'/'.join(map(str, data['counts']))}"
    )


# ---------------------------------------------------------------------------- S12, second half
def _more_similar_delta(chance_sd: Sequence[float]) -> float:
    """The slack of "does not make the permutations more similar", per doubling of width: the chance spread of
    the fixed-point fraction at the narrowest width (sqrt(G) / N, random fixed points being about Poisson(1)
    per group), the smallest rise per doubling that is not already the measurement's own noise."""
    return float(chance_sd[0])


@pytest.mark.claim("S12")
@pytest.mark.parametrize("family", params(
    list(WIDTHS_CPU), FAMILIES_GPU, cpu_table=WIDTHS_CPU, gpu_table=WIDTHS_GPU))
def test_s12_direct_and_indirect_permutations_share_few_fixed_points(
    family: WidthFamily, lab: Lab, n_seeds: int, measure
) -> None:
    """For WM and AM: the fixed-point fraction of the direct permutation P_{B->A} vs the indirect
    P_{A->C}^-1 o P_{B->C} is clearly not "similar" at every width (an indifference zone), and its slope on
    log2(width) is at most the chance spread of the narrowest width per doubling (equivalence, 90%)."""
    data = _collect_fixed_points(family, lab, n_seeds)
    widths, frac = data["widths"], data["frac"]
    delta = _more_similar_delta(data["chance_sd"])
    no_rise = reading(f"'does not make the permutations more similar' (App. G) has no number: a rise of at most "
                      f"{delta:.4g} per doubling of width, the chance spread sqrt(G)/N of the fixed-point fraction at "
                      f"the narrowest width (random fixed points are about Poisson(1) per layer), the measurement's "
                      "own noise")
    for m in METHODS:
        measure.expect(f"{SHORT[m]}: direct and indirect permutations not similar at every width", NOT_SIMILAR,
                       _points(widths, frac[m], range(len(widths))), NOT_SIMILAR_SOURCE, over="every", pool=True,
                       note=SIMILAR_PAPER.describe()[:160])
        _expect_slope(measure, f"{SHORT[m]}: width does not make them more similar (slope per doubling <= delta)",
                      Within(upper=delta), widths, frac[m], [0.0] * len(widths), no_rise,
                      note=SIMILAR_PAPER.describe()[:160] + ";")
    _render_s12(family, measure, data, n_seeds, delta)


def _render_s12(family: WidthFamily, measure, data: dict, n_seeds: int, delta: float) -> None:
    widths, frac, per_group = data["widths"], data["frac"], data["per_group"]
    measure.values.update({
        "family": family.name,
        "widths": widths,
        "seeds_per_width": data["counts"],
        "seeds_note": _seeds_note(family, data["counts"], n_seeds),
        "fixed_point_fraction_mean_std": {m: [mean_std(x) for x in frac[m]] for m in METHODS},
        "per_group_fraction_mean_std": {m: [{g: mean_std(v) for g, v in row.items()} for row in per_group[m]]
                                        for m in METHODS},
        "per_seed_group": per_group,
        "random_expectation_per_group": data["random_per_group"],
        "random_expectation_fraction": data["random_fraction"],
        "chance_sd_per_width": data["chance_sd"],
        "per_seed": frac,
        "note": "direct P_{B->A} vs indirect P_{A->C}^-1 o P_{B->C}; per group in the spec's group order",
    })
    measure.thresholds.update({"not_similar": [NOT_SIMILAR.clearly, NOT_SIMILAR.clearly_not],
                               "more_similar_delta_per_doubling": delta})
    measure.figure("fixed_points_vs_width",
                   title=f"S12 {family.name}: direct vs indirect permutations (mean, 95% t interval over triples)",
                   panels=[line_panel({**{SHORT[m]: (widths, _means(frac[m])) for m in METHODS},
                                       "random permutation": (widths, data["random_fraction"])},
                                      title="fraction of fixed points", xlabel="width", ylabel="fraction",
                                      xscale="log", yerr={SHORT[m]: _halfwidths(frac[m]) for m in METHODS},
                                      styles={"random permutation": "dotted"}),
                           line_panel({f"{SHORT[m]} {g}": (widths, _means([row[g] for row in per_group[m]]))
                                       for m in METHODS for g in per_group[m][0]},
                                      title="per layer (group)", xlabel="width", ylabel="fraction", xscale="log",
                                      yerr={f"{SHORT[m]} {g}": _halfwidths([row[g] for row in per_group[m]])
                                            for m in METHODS for g in per_group[m][0]},
                                      styles={f"AM {g}": "dashed" for g in per_group["activation"][0]})])
    measure.summary = (
        "fixed points direct vs indirect, width " + f"{widths[0]:g} -> {widths[-1]:g}: "
        + ", ".join(f"{SHORT[m]} {pct(mean_std(frac[m][0])[0])} -> {pct(mean_std(frac[m][-1])[0])}" for m in METHODS)
        + f" (random {pct(data['random_fraction'][0])} -> {pct(data['random_fraction'][-1])}); "
        f"triples {'/'.join(map(str, data['counts']))}"
    )
