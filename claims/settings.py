"""Settings the claim checks are parametrized over: CPU scale by default, GPU scale marked ``gpu``.

Each setting is its own pytest-xdist group, so under ``-n N --dist loadgroup``
(``make claims``) the checks that share a setting (and so its networks) run on
one worker, and different settings spread over the workers; a check whose own
products dominate its time can take a group of its own (``params(group=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from fixtures.recipes import CPU, GPU, REDUCTIONS, Regimes, Setting, WidthFamily, identity, reduce
from lmccheck.pytest_plugin.claims import BUDGET_MARK, RUN_ORDER_MARK


#: xdist groups shared across settings (``make claims`` on 2 workers). pytest-xdist's ``loadgroup`` hands each
#: worker the group with the most checks first and the next one when it is almost out of work, so the CPU tier
#: runs as two groups of about equal time. Measured per check at stop 35 (cold, fp32 barriers on an AVX2-only
#: CPU; worker minutes): S3 12.2, S5 9.5, S8 8.0, S4 6.3, S7 6.3, Z1-Z10 5.6, S6 4.3, S10 3.5, S2 2.4, S9 1.1.
#: The groups: mlp512-fmnist (S2, S3, Z1-Z10), then S4's children (they spawn from its networks), then the
#: 6-layer MLP (S10, then S12 on its pairs): 30.0 min; mlp128-fmnist (S5, S6, S9), then the width family (S7,
#: S12: its 128- and 512-wide triples are mlp128's and mlp512's networks, trained by then), then S8 and S12 on
#: mlp512-fmnist's checkpoints (``cpu_group="early"``; S3 has built their pairs and P_end by then): 29.2 min.
#: On a CPU with native bf16 (barriers about half the time) the same split gives about 23 min each.
#: A merged setting's checks run after its host's, in this order (the plugin's ``lmc_run_order`` mark), so that
#: nothing waits for a network another worker builds.
WORKER_GROUPS = {"mlp-fmnist-widths": "mlp128-fmnist", "mlp512-fmnist.early": "mlp128-fmnist",
                 "mlp512-fmnist.children": "mlp512-fmnist", "mlp256x6-fmnist": "mlp512-fmnist",
                 "mlp256x6-fmnist.early": "mlp512-fmnist"}


# ---------------------------------------------------------------------------- replicates at CPU scale
# A claim runs ``setting.replicates(n_seeds, cap)`` replicates (:meth:`fixtures.recipes.Setting.replicates`):
# --lmc-seeds on GPU settings, at most ``cap`` on CPU settings, where these caps keep the costliest checks within
# the CPU tier's budget (no cap: every claim not named here). The width families of S7 and S12 cap their triples
# per width (:attr:`fixtures.recipes.WidthFamily.seeds`).

#: replicates that have children at CPU scale (S4, and Zhou's spawned pairs): children are the most expensive
#: products of the CPU tier (3 per spawn time and seed); 3 seeds, the fewest that give a seed spread with 2
#: degrees of freedom per spawn time (issue 24); GPU settings use --lmc-seeds
CHILDREN_CPU_SEEDS = 3
#: S5's replicates at CPU scale: IMP retrains a network per level for A and B and S6 five more per measured
#: level, the most expensive products of the CPU tier; 3 seeds (issue 24: S5(b)'s paired contrast on at least
#: 3), the seed spread pooled over the levels of an assertion. GPU settings use --lmc-seeds
S5_CPU_SEEDS = 3
#: S6 at CPU scale: 2 seeds (the IMP sequences of S5's first two replicates). S6 retrains 5 networks per measured
#: level and seed, and a third seed (about 3 min of the 2 workers' budget) is what keeps `make claims` within its
#: 30 minutes; its contrasts pool the seed spread over the levels (df = 5 over 5 levels)
S6_CPU_SEEDS = 2
#: S10's replicates at CPU scale: every point is one weight matching and one 10k-example barrier of the MLP with
#: 6 hidden layers (7 weight layers), so S10 runs 2 seeds there, recorded as such; GPU settings use --lmc-seeds
S10_CPU_SEEDS = 2
#: S12's replicates at CPU scale where fewer than --lmc-seeds (by setting; the others have no cap): the 6-layer
#: MLP uses the two pairs S10 trains (a third would cost 70 s of the CPU budget for this check alone)
S12_CPU_SEEDS = {"mlp256x6-fmnist": 2}


#: the GPU settings of the sparse-network claims (S5, S6, S9): Sharma et al.'s VGG-16 and ResNet-20x4 with
#: LayerNorm on CIFAR-10, and their Fashion-MNIST variants that run offline
SPARSE_GPU = ["vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "vgg16-ln-fmnist", "resnet20x4-ln-fmnist"]


def params(
    cpu: list[str],
    gpu: list[str],
    findings: dict[str, str] | None = None,
    *,
    cpu_table: Mapping[str, Setting | WidthFamily | Regimes] = CPU,
    gpu_table: Mapping[str, Setting | WidthFamily | Regimes] = GPU,
    group: str = "",
    cpu_group: str = "",
) -> list[object]:
    """``pytest.param`` objects for the named settings; GPU ones carry the ``gpu`` marker.

    Every budget's GPU checks are returned: the paper-scale settings marked ``lmc_budget("full")`` and each
    reduced budget's versions (:func:`fixtures.recipes.reduce`) marked with its name; the plugin keeps those of
    the run's ``--lmc-budget`` (CPU settings carry no budget mark: the CPU tier has one size).

    The names come from ``cpu_table`` and ``gpu_table`` (the recipes' ``CPU`` and ``GPU`` settings by
    default; a claim over several widths or regimes passes its own tables of families).

    ``findings`` maps a setting to the reason (with the measured numbers) why the claim fails there
    significantly: that setting is marked ``lmc_finding``, so its FAIL keeps the run green while the report
    shows FAIL with its numbers; a PASS there fails the run (the finding no longer holds: remove it), and an
    INCONCLUSIVE verdict does not.

    ``group`` names a pytest-xdist group of the claim's own beside the setting's (``<setting>.<group>``):
    for a check that spends most of its time on products no other check uses (S4's children), so that
    under ``--dist loadgroup`` it runs on another worker while its setting's other checks train the
    networks they share (a worker that needs a network another one is building waits for it).
    ``cpu_group`` does the same for the CPU settings only (the CPU tier's balance over two workers,
    :data:`WORKER_GROUPS`); the GPU settings stay in their setting's group.
    """
    findings = dict(findings or {})
    unknown = set(findings) - set(cpu) - set(gpu)
    if unknown:
        raise ValueError(f"findings for settings the claim does not use: {sorted(unknown)}")

    def marks(name: str, gpu_: bool) -> list[pytest.MarkDecorator]:
        mine = group or ("" if gpu_ else cpu_group)
        own = f"{name}.{mine}" if mine else name
        order = list(WORKER_GROUPS).index(own) + 1 if own in WORKER_GROUPS else 0
        out = [pytest.mark.xdist_group(WORKER_GROUPS.get(own, own)), getattr(pytest.mark, RUN_ORDER_MARK)(order)]
        out += [pytest.mark.gpu] if gpu_ else []
        if name in findings:
            # only a significant FAIL of the claim's assertions is the finding: an error still fails the run
            out.append(pytest.mark.lmc_finding(reason=findings[name]))
        return out

    def budget(name: str) -> pytest.MarkDecorator:
        return getattr(pytest.mark, BUDGET_MARK)(name)

    out: list[object] = [pytest.param(cpu_table[name], id=name, marks=marks(name, False)) for name in cpu]
    out += [pytest.param(gpu_table[name], id=name, marks=[*marks(name, True), budget("full")]) for name in gpu]
    # each reduced budget: the reduced settings, once each (under smoke a recipe's CIFAR-10 and Fashion-MNIST
    # variants become one)
    for reduction in REDUCTIONS:
        seen: set[tuple] = set()
        for name in gpu:
            reduced = reduce(gpu_table[name], reduction)
            if identity(reduced) not in seen:
                seen.add(identity(reduced))
                out.append(pytest.param(reduced, id=reduced.name, marks=[*marks(reduced.name, True),
                                                                         budget(reduction)]))
    return out


def describe(setting: Setting) -> dict[str, object]:
    """The recipe of a setting, for the claim record."""
    return {"name": setting.name, "recipe": setting.config.recipe()}
