"""The catalog of claim mutations that ``tools/claim_mutations.py`` runs (issue 24's acceptance).

Each entry of :data:`MUTATIONS` replaces one piece of text (which must occur exactly once) in one file under
``claims/``, says what the replacement restores or breaks, and what reaction to expect on the CPU tier's current
data; the fields of :class:`Mutation` say the rest. :func:`check_catalog` checks that every entry applies,
:func:`by_name` selects entries and :func:`claims_in` says which claims have a check in a file. The runner
(staging a copy, running the checks, comparing with the baseline report, the command line) is
``tools/claim_mutations.py``, which imports this module from beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_DIR = "claims"


class MutationError(ValueError):
    """A catalog entry that cannot be applied (its text is missing or not unique)."""


@dataclass(frozen=True)
class Mutation:
    """One deliberate break of a claim check's assertion."""

    name: str
    #: claim id(s) of the checks to run, as ``--lmc-claim`` takes them ("S3", or "Z1,Z2,Z6")
    claim: str
    #: the file under ``claims/`` that is changed
    file: str
    #: text replaced (must occur exactly once in the file) ...
    old: str
    #: ... by this
    new: str
    #: what the replacement restores or breaks
    breaks: str
    #: the reaction expected on the CPU tier's current data, in words
    expected: str
    #: an optional ``-k`` expression narrowing the checks further (empty: every check of ``claim`` in ``file``)
    k: str = ""
    #: the files under ``claims/`` whose checks run, comma-separated, when ``file`` is a helper module they import
    #: (``llfc_pairs.py``); empty: ``file`` itself
    checks: str = ""

    @property
    def path(self) -> str:
        """The file, relative to the repository root."""
        return f"{CLAIMS_DIR}/{self.file}"

    @property
    def check_files(self) -> list[str]:
        """The files under ``claims/`` whose checks run: :attr:`checks`, else :attr:`file`."""
        return [f.strip() for f in (self.checks or self.file).split(",") if f.strip()]

    @property
    def claims(self) -> list[str]:
        return [c.strip().upper() for c in self.claim.split(",") if c.strip()]

    def apply(self, text: str) -> str:
        """``text`` with ``old`` replaced by ``new``; :class:`MutationError` unless ``old`` occurs exactly once."""
        count = text.count(self.old)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise MutationError(f"mutation {self.name}: its old text {where} in {self.path} (it must occur exactly "
                                f"once): {self.old[:120]!r}")
        if self.new == self.old:
            raise MutationError(f"mutation {self.name}: new text equals old text")
        return text.replace(self.old, self.new, 1)


# --------------------------------------------------------------------------------------------------------------- #
# The catalog
# --------------------------------------------------------------------------------------------------------------- #
MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------------ S3
    Mutation(
        name="S3-ratio-3of70", claim="S3", file="test_s3_trajectory.py",
        old="from .rules import HIGHLY_REDUCED_RATIO, contrast_noise, error_barrier_se, seed_halfwidths, seed_means\n",
        new="from .rules import contrast_noise, error_barrier_se, seed_halfwidths, seed_means\n"
            "HIGHLY_REDUCED_RATIO = 3 / 70\n",
        breaks="the bound: 3/70 (the best case of the paper's '3-8%') instead of its worst case 8/70",
        expected="every contrast 8/70*U_end - aligned falls by 5/70 of the converged unaligned barrier (about 1.5 "
                 "points): estimates and intervals of all four rows move down; AM test/train INCONCLUSIVE -> FAIL "
                 "(their seed means sit ~0.5 point inside 8/70), WM rows lose most of their margin; check "
                 "INCONCLUSIVE -> FAIL",
    ),
    Mutation(
        name="S3-per-seed", claim="S3", file="test_s3_trajectory.py",
        old=('            measure.expect(f"{METHOD_NAMES[m]} {split}: error barrier under P_end <= 8/70 of the '
             'converged unaligned",\n'
             '                           Above(0.0), contrast, SOURCE, over="every", noise=noise, pool=True)'),
        new=('            measure.expect_exact(f"{METHOD_NAMES[m]} {split}: error barrier under P_end <= 8/70 of the '
             'converged unaligned",\n'
             '                                 all(c > 0 for v in contrast.values() for c in v),\n'
             '                                 min(c for v in contrast.values() for c in v),\n'
             '                                 "every seed > 0 at every t (per-seed conjunction)", SOURCE)'),
        breaks="the per-seed conjunction back: every seed at every checkpoint must be below 8/70 (an exact "
               "check of the smallest per-seed contrast) instead of the seed mean with its pooled t interval",
        expected="all four rows become Exact (no interval; estimate = the smallest per-seed contrast): rule, "
                 "bound, interval and points change on every row; AM rows (seed means ~0.5 point inside the bound) "
                 "INCONCLUSIVE -> FAIL where one seed exceeds 8/70 at one checkpoint; check INCONCLUSIVE -> FAIL "
                 "(or PASS if no seed ever exceeds it)",
    ),
    # ------------------------------------------------------------------ S4
    Mutation(
        name="S4-delta-tenth", claim="S4", file="test_s4_children.py",
        old="SAME_ALIGNMENT_RATIO = 5 / 70",
        new="SAME_ALIGNMENT_RATIO = 0.5 / 70",
        breaks="delta of 'aligned as well as the parents': 0.5/70 of the unaligned children's barrier (~0.15 "
               "point) instead of 5/70 (~1.5 points), below the contrast's own noise",
        expected="bound '<= 0.0148' -> '<= 0.0015' on the two deciding TOST rows (and the recorded Fig. 8 col. 3 and "
                 "before-onset rows); WM/AM 'aligned as well as the parents' PASS -> INCONCLUSIVE (90% intervals "
                 "reach ~1.3 points); check PASS -> INCONCLUSIVE",
    ),
    Mutation(
        name="S4-onset-no-noise", claim="S4", file="test_s4_children.py",
        old="if all(x <= thr for x in inst_mean[i:])), None)",
        new="if all(x <= 0 for x in inst_mean[i:])), None)",
        breaks="the onset rule: 'no error barrier' read literally (instability mean <= 0) instead of below the "
               "Monte Carlo noise threshold (§2.1)",
        expected="no spawn time has a zero instability barrier, so there is no onset: the deciding rows turn "
                 "non-deciding (premise note) and the check is skipped; check PASS -> SKIP",
    ),
    # ------------------------------------------------------------------ S5
    Mutation(
        name="S5a-8of70", claim="S5", file="test_s5_s6_imp.py",
        old="{level_label(i, remaining[i]): [err[other][s][i] - err[series][s][i] for s in range(len(runs))]",
        new=("{level_label(i, remaining[i]): [(8 / 70 if other == \"unpermuted\" else 1) * err[other][s][i] "
             "- err[series][s][i] for s in range(len(runs))]"),
        breaks="S5(a) with S3's 8/70 bound imported for Fig. 2 (P's barrier <= 8/70 of the unpermuted one) instead "
               "of the plain ordering 'below the unpermuted barrier'",
        expected="the two (a) rows' contrasts shrink from ~0.28 to 8/70*0.28 - P's barrier (~0.03 minus P's barrier "
                 "at the sparse levels): estimates and intervals move; outcome PASS -> INCONCLUSIVE or FAIL where "
                 "P's barrier at a sparse matching level approaches 3 points; (b) unchanged",
    ),
    Mutation(
        name="S5b-every-level", claim="S5", file="test_s5_s6_imp.py",
        old="sparsest = [i for i in matching if remaining[i] <= SPARSEST_REMAINING] or [max(matching)]",
        new="sparsest = list(matching)",
        breaks="S5(b) judged at every matching level instead of the sparsest ones (<= 20% remaining), the spread "
               "pooled over all of them",
        expected="(b)'s points gain the dense and near-dense levels (level 0: contrast 0 by construction for WM), "
                 "its pooled spread and worst point change: estimate/interval move, outcome stays INCONCLUSIVE or "
                 "becomes FAIL/PASS; the check stays a known-finding candidate",
    ),
    # ------------------------------------------------------------------ S6
    Mutation(
        name="S6-tie-fails", claim="S6", file="test_s5_s6_imp.py",
        old=('    measure.expect(\n'
             '        f"the transported mask (WM) is more accurate than one-shot pruning {where}", Above(0.0),'),
        new=('    (measure.expect if stops else lambda name, rule, contrast, source, **_: measure.expect_exact(\n'
             '        name, False, sum(contrast) / len(contrast),\n'
             '        "one-shot matching down to the sparsest level: a tie, counted as FAIL", source))(\n'
             '        f"the transported mask (WM) is more accurate than one-shot pruning {where}", Above(0.0),'),
        breaks="the tie rule: where one-shot pruning is matching at every measured level (no transition on the grid) "
               "the comparison counts as FAIL instead of INCONCLUSIVE (not exercised)",
        expected="on the CPU grid one-shot pruning matches down to 10.7%, so the one-shot row turns from INCONCLUSIVE "
                 "(not exercised) into an Exact FAIL; check INCONCLUSIVE -> FAIL",
    ),
    Mutation(
        name="S6-delta-wide", claim="S6", file="test_s5_s6_imp.py",
        old="MATCHING_DELTA = 0.01",
        new="MATCHING_DELTA = 0.05",
        breaks="the matching delta: 5 points below the dense accuracy still counts as 'matching' (instead of 1 point)",
        expected="bounds '>= -0.01' -> '>= -0.05' and '<= -0.01' -> '<= -0.05'; the transported mask 'matching' "
                 "INCONCLUSIVE -> PASS, the unpermuted mask 'not matching at any level' INCONCLUSIVE -> FAIL (it is "
                 "within ~1 point of dense); check INCONCLUSIVE -> FAIL",
    ),
    # ------------------------------------------------------------------ S7
    Mutation(
        name="S7-slope-sign", claim="S7", file="test_s7_s12_strong_connectivity.py",
        old='indirect barrier falls with width (slope per doubling < 0)", Below(0.0),',
        new='indirect barrier falls with width (slope per doubling < 0)", Above(0.0),',
        breaks="the sign of 'the indirect barrier falls with width' (slope over log2 width > 0 asserted)",
        expected="the four slope rows (WM/AM, loss/error) PASS -> FAIL, bound '< 0' -> '> 0'; check INCONCLUSIVE "
                 "-> FAIL",
    ),
    # ------------------------------------------------------------------ S8 (same file as S12 mlp512/mlp512x6)
    Mutation(
        name="S8-fig4-0.8", claim="S8", file="test_s8_s12_early_permutations.py",
        old="FIG4_FAILS_BEFORE = 80.0 / PAPER_EPOCHS",
        new="FIG4_FAILS_BEFORE = 0.8",
        breaks="the old constant back: Fig. 4's window 'before 80% of training' instead of 'before 80/150'",
        expected="the Fig. 4 row gains the checkpoint t = 3 (of 5 epochs), where WM's P_t is as good as P_end: a "
                 "point appears; the row stays FAIL (the known finding) and the check stays FAIL",
    ),
    Mutation(
        name="S8-similar-after-40of150", claim="S8", file="test_s8_s12_early_permutations.py",
        old="SIMILAR_AFTER = 10.0 / PAPER_EPOCHS",
        new="SIMILAR_AFTER = 40.0 / PAPER_EPOCHS",
        breaks="H.1's 'after around epoch 10' moved to epoch 40 of 150 (the old 0.1 selects the same checkpoints "
               "as 10/150 on the CPU grid, so it would not show)",
        expected="the 'before 10/150' windows gain t = 0.5 and 1 epoch and 'from 10/150' loses them: the L2 row, "
                 "the 'clearly > 0.05 before' row and the 'similar from' row change points and estimates (the "
                 "'clearly > 0.05 before' row INCONCLUSIVE, or FAIL where P_t's end gap at t = 1 is shown below 2 "
                 "points); the check stays FAIL (known finding)",
    ),
    # ------------------------------------------------------------------ S12
    Mutation(
        name="S12-depth-sign", claim="S12", file="test_s8_s12_early_permutations.py",
        old='"(Spearman, every checkpoint)", Below(0.0),',
        new='"(Spearman, every checkpoint)", Above(0.0),',
        breaks="the sign of 'highest in early layers' (rank correlation of depth with the fraction > 0 asserted)",
        expected="mlp512x6: the deciding depth row's bound '< 0' -> '> 0' and every point's outcome flips side "
                 "(t = 0.25, 0.5: rho +0.71, +0.54 now PASS); the row FAIL -> INCONCLUSIVE, or stays FAIL if a later "
                 "checkpoint's rho is significantly negative; check FAIL (known finding) -> INCONCLUSIVE or stays; "
                 "mlp512: the recorded row's bound flips (not deciding, 3 groups)",
    ),
    # ------------------------------------------------------------------ S9
    Mutation(
        name="S9-every-p", claim="S9", file="test_s9_pruned_matching.py",
        old="moderate = [j for j, p in enumerate(SPARSITIES) if 0 < p <= MODERATE_SPARSITY]",
        new="moderate = [j for j, p in enumerate(SPARSITIES) if 0 < p]",
        breaks="the p <= 0.5 window of 'magnitude pruning generally does not raise the barrier': the mean over "
               "every p up to 0.95",
        expected="the magnitude rows average in p = 0.6-0.95, where magnitude pruning of the 128-wide MLP raises "
                 "the barrier: estimates rise well above 0; the deciding row PASS -> FAIL or INCONCLUSIVE; check "
                 "PASS -> FAIL or INCONCLUSIVE",
    ),
    # ------------------------------------------------------------------ S10
    Mutation(
        name="S10-edge-one-solve", claim="S10", file="test_s10_layerwise_alignment.py",
        old='edge_value = ([data["wm_restart_mean"][s] for s in seed_range] if edge == "low"',
        new='edge_value = ([r.error_barrier for r in ref] if edge == "low"',
        breaks="the band's lower edge from one weight-matching solve of P_end instead of the mean of the 5 restarts",
        expected="the 'at least P_end's' row's contrasts change at every (t, mode, k): estimate/interval move; it "
                 "moved INCONCLUSIVE -> PASS when the restart mean came in, so PASS -> INCONCLUSIVE is expected",
    ),
    # ------------------------------------------------------------------ Z (llfc_pairs.py: the checks' shared helpers)
    Mutation(
        name="Z-premise-gate", claim="Z1,Z2,Z6", file="llfc_pairs.py",
        checks="test_z1_z3_llfc.py,test_z6_z7_z10_commutativity.py",
        old='return {"decides": True} if met.get(kind, False) else {"decides": False, "note": PREMISE_NOTE}',
        new='return {"decides": True}',
        breaks="the LMC premise gate: LLFC is judged on pair kinds that miss the premise (WM-/AM-aligned pairs)",
        expected="the WM-/AM-aligned rows become deciding: Z1 PASS -> INCONCLUSIVE (WM-aligned ratio ~0.12), "
                 "Z2 PASS -> INCONCLUSIVE (AM-aligned ~0.10), Z6 PASS -> INCONCLUSIVE (WM-aligned ~0.28)",
    ),
    Mutation(
        name="Z3-premise-gate", claim="Z3", file="test_z1_z3_llfc.py",
        old="judged = [k for k in LMC_KINDS if met.get(k) and _in_scope(setting, k)]",
        new="judged = [k for k in LMC_KINDS if _in_scope(setting, k)]",
        breaks="Z3's premise gate: the median case counts the (layer, alpha) cases of pair kinds that miss the "
               "premise",
        expected="the median case's |E[coef] - 1| takes the WM-/AM-aligned cases in (up to ~0.35): the deciding "
                 "median row's estimate rises from ~0.04 (PASS -> INCONCLUSIVE if it passes 0.1, else the reaction "
                 "is in the estimate); the recorded share row is renamed (its counts change)",
    ),
    Mutation(
        name="Z-every-layer", claim="Z1,Z2", file="test_z1_z3_llfc.py",
        old="return min(max(1, n_layers // NEARLY_ALL_PER_EXCEPTION), n_layers - 1)",
        new="return 0",
        breaks="'nearly all the layers' back to every layer (no layer may miss)",
        expected="the nearly-all rows are renamed ('all but 0 of 4') and take each seed's worst layer: estimates "
                 "rise (Z1 spawned ~0.059 -> ~0.062, Z2 ~0.041 -> ~0.07); outcomes likely stay PASS (the reaction "
                 "is in the estimate)",
    ),
    Mutation(
        name="Z-negligible-0.05", claim="Z1,Z6", file="llfc_pairs.py",
        checks="test_z1_z3_llfc.py,test_z6_z7_z10_commutativity.py",
        old="CLEARLY_NEGLIGIBLE = 0.1",
        new="CLEARLY_NEGLIGIBLE = 0.05",
        breaks="'negligible' (CLEARLY_NEGLIGIBLE): a ratio below 0.05 instead of 0.1 is clearly negligible",
        expected="bound '< 0.1' -> '< 0.05'; Z1 spawned (0.059 [0.054, 0.064]) PASS -> INCONCLUSIVE, Z6 spawned "
                 "(0.059 [0.052, 0.066]) PASS -> INCONCLUSIVE; both checks PASS -> INCONCLUSIVE",
    ),
    Mutation(
        name="Z10-sign", claim="Z10", file="test_z6_z7_z10_commutativity.py",
        old="{s: [u - v for u, v in zip(before[s], after[m][s], strict=True)] for s in sites},",
        new="{s: [v - u for u, v in zip(before[s], after[m][s], strict=True)] for s in sites},",
        breaks="Z10's contrast reversed: Dist_com after matching minus the unmatched pair's",
        expected="'Dist_com falls below the unmatched pair's, every layer' PASS -> FAIL for WM and AM (estimates "
                 "change sign); check PASS -> FAIL",
    ),
]


def by_name(names: Sequence[str]) -> list[Mutation]:
    """The catalog entries named (comma-separated names allowed); SystemExit naming an unknown one."""
    wanted = [n.strip() for arg in names for n in arg.split(",") if n.strip()]
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(wanted)]


def claims_in(file: str, claims: Sequence[str], root: Path = ROOT) -> list[str]:
    """Those of ``claims`` that have a check in ``claims/<file>`` (a ``claim`` marker naming them)."""
    text = (root / CLAIMS_DIR / file).read_text(encoding="utf-8")
    return [c for c in claims if f'@pytest.mark.claim("{c}")' in text]


def check_catalog(root: Path = ROOT) -> None:
    """Every entry applies to its file exactly once and names unique (:class:`MutationError` otherwise)."""
    names = [m.name for m in MUTATIONS]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MutationError(f"mutation names are not unique: {', '.join(dup)}")
    for m in MUTATIONS:
        m.apply((root / m.path).read_text(encoding="utf-8"))
