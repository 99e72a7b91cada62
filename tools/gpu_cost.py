"""What the paper-scale GPU tier costs: its products per setting, their FLOPs, and hours on one H100.

    .venv/bin/python tools/gpu_cost.py                    # the Markdown tables on stdout (about 10 s)
    .venv/bin/python tools/gpu_cost.py --markdown OUT.md  # ... written to OUT.md
    .venv/bin/python tools/gpu_cost.py --seeds 5          # at --lmc-seeds 5 (the paper's replicates)

No GPU, store or dataset is touched: the product counts come from the tables below (one per claim, with the
claim code lines they come from), the FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` run on the real
models (``lmccheck.models.get_model``) built on the meta device, in a few seconds on a CPU.

What is counted (per distinct product: the store is content-addressed, so a network trained for S3 is the
one S5, S8, S9, S10, S12 and Z1-Z10 use, and a product shared by several checks is counted once, in the row of
its recipe):

* training: 3 x forward FLOPs x training examples (CIFAR-10 50,000, Fashion-MNIST 60,000) x epochs, for every
  network trained (pairs and triples from 0, children from their spawn time, IMP levels and S6's retrainings
  from the rewind point), bf16 autocast; plus the checkpoint evaluations (10k train and 10k test examples at
  each checkpoint after the start);
* a barrier: forward FLOPs x its setting's alphas (25; the dry run's 5) x its examples (bf16, S2's fp32); a
  simplex barrier: x its 82 grid points (edges at 24 steps, a setting's alphas - 1, interior at 6); building
  the interpolated states is neglected;
* activation matching: two fp32 forward passes over the training split plus the float64 Gram ``a b^T`` of
  every matched activation (2 C^2 x positions per example and group); its assignment solves are neglected;
* weight matching: CPU time of its assignment solves (scipy, on the host: the GPU idles), modelled as
  ``c x sum over groups of n^3`` with c fitted to the CPU benchmarks in docs/performance.md (0.47e-9 s: trained
  mlp 3x2048, 12.0 s; 1.06e-9 s: resnet20 16x planted, 5.2 s); its Grams on the device are neglected;
* Zhou et al.'s feature statistics (fp32, 10k test examples, batches of 32): LLFC 5 forward passes (A, B and 3
  alphas), weak additivity 2, commutativity 2 plus 4 float64 ``W H`` products per layer (counted as 4 float64
  forward passes), stitching 2 + one per stitched layer, spectra 1;
* FlopCounterMode counts matmuls and convolutions only (LayerNorm, ReLU, pooling, augmentation, the optimizer
  and pruning are memory-bound and neglected, as are masked, pruned and hybrid networks, which are derived
  without training).

Throughput (one H100 SXM, dense peaks): bf16 989 TFLOP/s, TF32 495 (fp32 convolutions use TF32 on CUDA by
default), fp64 67 (tensor core; fp64 convolutions may reach less). Achieved fraction (MFU): nothing of the
GPU tier has run on a device yet (docs/gpu.md and ``benchmarks/test_gpu.py`` have targets, no
measurements), so two scenarios bracket it:

* fast: 40% MFU, and at least 2 ms per training step and 0.5 ms per evaluation batch;
* slow: 15% MFU, and at least 6 ms per training step and 1.5 ms per evaluation batch.

40% is what large, dense bf16 convolutions (the 8x-32x widths: 31-61 TFLOP per step at batch 128) reach with
cuDNN in channels_last; 15% allows for the narrow layers (VGG-16's 64-channel blocks, ResNet-20 4x's 64-256
channels: GEMMs with N = 64..256 fill few tensor-core tiles) and the memory-bound LayerNorms between them. The
floors are the launch bound of eager PyTorch: a training step of these nets launches several hundred kernels
(forward, backward, SGD, augmentation), 5-10 us each on the host, so a 1x network (0.03-0.24 TFLOP per step,
under 1 ms of tensor-core work) is limited by them, not by FLOPs; issue 16's targets (vgg16 1x epoch <= 2 s,
resnet20 1x <= 1.5 s: 5.1 and 3.8 ms per step) are of that order. Time = max(FLOP time, floor) per product
kind, plus weight matching's CPU time; products are built one after another (one worker, one GPU).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.flop_counter import FlopCounterMode

from fixtures.recipes import (
    GPU,
    REDUCTIONS,
    REGIMES_GPU,
    WIDTHS_GPU,
    Regimes,
    Setting,
    WidthFamily,
    identity,
    reduce,
)
from lmccheck.activation_matching import activation_modules
from lmccheck.barrier_curves import simplex_grid
from lmccheck.barrier_options import DEFAULT_N_EXAMPLES
from lmccheck.llfc import CONV_BATCH, sites_of
from lmccheck.models import get_model
from lmccheck.pytest_plugin.options import DEFAULT_SEEDS, REDUCED_SEEDS
from lmccheck.rewinding import MODES, weight_layers

# ----------------------------------------------------------------------------------------------- throughput
#: dense peak TFLOP/s of one H100 SXM (NVIDIA's datasheet, without sparsity)
PEAK_TFLOPS = {"bf16": 989.4, "tf32": 494.7, "fp64": 66.9}


@dataclass(frozen=True)
class Scenario:
    """An assumed achieved throughput (see the module docstring)."""

    name: str
    mfu: float
    train_step_floor_s: float
    eval_batch_floor_s: float
    wm_s_per_n3: float
    """Weight matching's CPU seconds per sum over groups of n^3 (fitted to the CPU benchmarks in
    docs/performance.md)."""


SCENARIOS = (Scenario("fast", 0.40, 0.002, 0.0005, 4.7e-10), Scenario("slow", 0.15, 0.006, 0.0015, 1.06e-9))
BUDGETS_H = {"15 min": 0.25, "1 hour": 1.0, "8 hours": 8.0}

#: training examples per epoch (the datasets' training splits)
TRAIN_EXAMPLES = {"cifar10": 50_000, "fashion-mnist": 60_000}
INPUT = {"cifar10": (3, 32), "fashion-mnist": (1, 28)}
EVAL_BATCH = 2048  # lmccheck.training_loop.EVAL_BATCH_SIZE: checkpoint evaluations
BARRIER_BATCH = 4096  # lmccheck.barrier_options._default_batch_size on CUDA, conv nets
AM_BATCH = 500  # lmccheck.activation_matching.activation_matching's batch_size


# ------------------------------------------------------------------------------ constants of the claim code
# Copied from the claim modules (tests/test_gpu_cost.py checks they still agree).
S5_GPU_LEVELS = 14  # claims/test_s5_s6_imp.py:81 GPU_LEVELS
S5_PAPER_REWIND_FRACTION = 5 / 150  # claims/test_s5_s6_imp.py:76
S6_LEVEL_STEP = 2  # claims/test_s5_s6_imp.py:83
S6_SERIES_TRAINED = 5  # claims/test_s5_s6_imp.py:451-460: transported WM and AM, control, one-shot, sparse-sparse
S6_BARRIERS_NEW = 5  # :463-473: App. F 5(a)'s six, "P B(i)" being S5's dense-WM test barrier at level i
S8_TRAJECTORY_AT = (0.05, 0.2)  # claims/test_s8_s12_early_permutations.py:57
S9_SPARSITIES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95)  # claims/test_s9_pruned_matching.py:53
S9_TIME_FRACTIONS = (0.1, 0.4, 1.0)  # claims/test_s9_pruned_matching.py:62
S9_PER_TIME = 1 + 2 * (len(S9_SPARSITIES) - 1) + 1  # :179-189: p = 0 once, 2 methods at p > 0, a second solve
S10_FIRST_REWIND = 1.0  # claims/test_s10_layerwise_alignment.py:70 GPU_FIRST_REWIND
S10_SPLIT_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4)  # :78 GPU_SPLIT_FRACTIONS
S10_RESTART_SEEDS = (0, 1, 2, 3, 4)  # :85 RESTART_SEEDS (seed 0 is P_end itself)
S7_SIMPLEX = (6, 24)  # claims/test_s7_s12_strong_connectivity.py:75-81 (interior, edge resolution)
Z_SPAWN_AT = 5.0  # claims/llfc_pairs.py SPAWN_AT_DEFAULT (conv nets)
Z_KINDS = 4  # claims/llfc_pairs.py KINDS: spawned, WM-aligned, AM-aligned, independent


# ------------------------------------------------------------------------------------------------ networks
@dataclass(frozen=True)
class NetStats:
    """FLOPs and sizes of one architecture at one width on one dataset (per example)."""

    forward_flops: float
    am_gram_flops: float
    """Activation matching's float64 Gram per example: sum over groups of 2 C^2 x positions."""
    wm_n3: float
    """Sum over permutation groups of n^3 (one weight matching's assignment work)."""
    weight_layers: int
    layer_groups_align: bool
    stitch_sites: int
    conv: bool


def _model_kwargs(arch: str, width: float, norm: str | None) -> dict[str, object]:
    kw: dict[str, object] = {"width": int(width) if arch == "mlp" else float(width)}
    if norm is not None:
        kw["norm"] = norm
    return kw


@functools.cache
def net_stats(arch: str, width: float, dataset: str, norm: str | None = "layernorm",
              depth: int | None = None) -> NetStats:
    """Measured on the meta device: FlopCounterMode over one forward pass, shapes from hooks."""
    channels, size = INPUT[dataset]
    kw = _model_kwargs(arch, width, norm if arch != "mlp" else None)
    if depth is not None:
        kw["depth"] = depth
    with torch.device("meta"):
        model = get_model(arch, **kw, in_channels=channels, input_size=size, num_classes=10)
        x = torch.empty(2, channels, size, size)
    spec = model.permutation_spec()
    state = model.state_dict()
    sizes = {g: int(state[k].shape[ax]) for g, members in spec.groups.items() for k, ax in members[:1]}
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [modules[names[0]].register_forward_hook(
        lambda _m, _i, out, g=g: shapes.__setitem__(g, tuple(out.shape[1:])))
        for g, names in activation_modules(spec).items()]
    with FlopCounterMode(display=False) as counter:
        model(x)
    for h in hooks:
        h.remove()
    gram = sum(2 * s[0] ** 2 * math.prod(s[1:]) for s in shapes.values())
    layers = weight_layers(spec)
    groups = spec.group_names
    # claims/test_s10_layerwise_alignment.py:119-125 _layer_groups_align (S10's spliced series)
    aligned = len(groups) == len(layers) - 1 and all(spec.axes[keys[0]][0] == g for (_, keys), g in zip(layers, groups))
    return NetStats(counter.get_total_flops() / 2, float(gram), float(sum(n**3 for n in sizes.values())), len(layers),
                    aligned, len(sites_of(model).stitch), any(isinstance(m, torch.nn.Conv2d) for m in model.modules()))


# --------------------------------------------------------------------------------------------------- work
@dataclass(frozen=True)
class Work:
    """What some products cost: counts (for the table), FLOPs, and seconds per scenario."""

    trainings: float = 0.0
    epochs: float = 0.0
    barriers: float = 0.0
    simplices: float = 0.0
    wm: float = 0.0
    am: float = 0.0
    features: float = 0.0
    flops: float = 0.0
    seconds: tuple[float, ...] = field(default_factory=lambda: (0.0,) * len(SCENARIOS))
    """Hours of the products per scenario, weight matching's CPU time included."""
    cpu_seconds: tuple[float, ...] = field(default_factory=lambda: (0.0,) * len(SCENARIOS))
    """Of which weight matching's assignment solves on the host CPU."""

    def __add__(self, other: Work) -> Work:
        return Work(**{f.name: (tuple(a + b for a, b in zip(getattr(self, f.name), getattr(other, f.name)))
                                if f.name in _TUPLES else getattr(self, f.name) + getattr(other, f.name))
                       for f in fields(self)})

    def __mul__(self, k: float) -> Work:
        return Work(**{f.name: (tuple(a * k for a in getattr(self, f.name)) if f.name in _TUPLES
                                else getattr(self, f.name) * k) for f in fields(self)})

    __rmul__ = __mul__

    @property
    def matchings(self) -> float:
        return self.wm + self.am


_TUPLES = ("seconds", "cpu_seconds")
ZERO = Work()


def _seconds(flops: dict[str, float], floor_units: float, floor_attr: str, wm_n3: float = 0.0) -> tuple[float, ...]:
    """Per scenario: max(FLOP time, floor) plus weight matching's CPU time."""
    out = []
    for s in SCENARIOS:
        t = sum(f / (PEAK_TFLOPS[p] * 1e12 * s.mfu) for p, f in flops.items())
        out.append(max(t, floor_units * getattr(s, floor_attr)) + wm_n3 * s.wm_s_per_n3)
    return tuple(out)


@dataclass(frozen=True)
class Ctx:
    """One setting (recipe) and the quantities the claim tables are written in."""

    setting: Setting

    @property
    def cfg(self):
        return self.setting.config

    @property
    def net(self) -> NetStats:
        kw = self.cfg.model_kwargs
        return net_stats(self.cfg.arch, float(kw.get("width", 1.0)), self.cfg.dataset, kw.get("norm", "layernorm"),
                         kw.get("depth"))

    @property
    def E(self) -> float:
        return float(self.cfg.epochs)

    @property
    def times(self) -> list[float]:
        return sorted(self.cfg.checkpoints)

    @property
    def T(self) -> int:
        """Checkpoints, 0 and the end included."""
        return len(self.times)

    @property
    def n_train(self) -> int:
        n = TRAIN_EXAMPLES[self.cfg.dataset]
        return min(n, self.cfg.train_subset) if self.cfg.train_subset else n

    @property
    def eval(self) -> int:
        return int(self.setting.eval_examples)

    @property
    def levels(self) -> int:  # claims/test_s5_s6_imp.py:164-167 n_levels
        return REDUCTIONS[self.setting.reduced].imp_levels if self.setting.reduced else S5_GPU_LEVELS

    @property
    def rewind(self) -> float:  # claims/test_s5_s6_imp.py:157-161 rewind_epoch
        target = S5_PAPER_REWIND_FRACTION * self.E
        return min(t for t in self.times if target - 1e-9 <= t < self.E)

    @property
    def s6_levels(self) -> list[int]:  # claims/test_s5_s6_imp.py:170-172
        return sorted({*range(self.levels, 0, -S6_LEVEL_STEP)})

    @property
    def spawn_times(self) -> list[float]:  # claims/test_s4_children.py:114: every checkpoint before the end
        return [t for t in self.times if t < self.E]

    @property
    def s10_times(self) -> list[float]:  # claims/test_s10_layerwise_alignment.py:163
        return [t for t in self.times if self.setting.at(S10_FIRST_REWIND) <= t < self.E]

    @property
    def early_times(self) -> list[float]:
        """Checkpoints before the end that S10 does not rewind to (S8, S12 match there too)."""
        return [t for t in self.spawn_times if t not in self.s10_times]

    @property
    def s10_points(self) -> int:  # :107-116 split_points: every mode at the same split points on GPU
        n = self.net.weight_layers
        ks = {max(1, min(n - 1, round(f * n))) for f in S10_SPLIT_FRACTIONS}
        return len(self.s10_times) * len(MODES) * len(ks)

    @property
    def s8_traj_times(self) -> list[float]:  # claims/test_s8_s12_early_permutations.py:203
        return sorted({min(self.times, key=lambda t: abs(t - f * self.E)) for f in S8_TRAJECTORY_AT} - {0.0})

    @property
    def s9_times(self) -> list[float]:  # claims/test_s9_pruned_matching.py:93-96 checkpoint_times
        return [min(self.times, key=lambda t: (abs(t - f * self.E), t)) for f in S9_TIME_FRACTIONS]

    @property
    def z_spawn(self) -> float:  # claims/llfc_pairs.py _pairs: setting.at(SPAWN_AT_DEFAULT)
        return self.setting.at(Z_SPAWN_AT)

    # -- product costs ------------------------------------------------------------------------------------
    def train(self, networks: float = 1.0, start: float = 0.0) -> Work:
        """``networks`` runs trained from ``start`` to the end, with their checkpoint evaluations."""
        epochs = self.E - start
        f = self.net.forward_flops
        train_flops = 3 * f * self.n_train * epochs
        steps = math.ceil(self.n_train / self.cfg.batch_size) * epochs
        ckpts = len([t for t in self.times if t >= start - 1e-9])
        n_eval = min(self.cfg.eval_examples, self.n_train)
        eval_flops = ckpts * f * (n_eval + self.cfg.eval_examples)
        eval_batches = ckpts * (math.ceil(n_eval / EVAL_BATCH) + math.ceil(self.cfg.eval_examples / EVAL_BATCH))
        sec = tuple(a + b for a, b in zip(_seconds({"bf16": train_flops}, steps, "train_step_floor_s"),
                                          _seconds({"bf16": eval_flops}, eval_batches, "eval_batch_floor_s")))
        return Work(trainings=1, epochs=epochs, flops=train_flops + eval_flops, seconds=sec) * networks

    def trained_from(self, starts: Iterable[float]) -> Work:
        return sum((self.train(1, s) for s in starts), ZERO)

    def barrier(self, count: float = 1.0, n: int | None = None, precision: str = "bf16",
                points: int | None = None) -> Work:
        """``count`` barrier curves (the setting's alphas: 25, the dry run's 5) of ``n`` examples (None: the
        setting's), or simplex barriers of ``points`` grid points."""
        n = self.eval if n is None else n
        evals = self.setting.alphas if points is None else points
        flops = self.net.forward_flops * evals * n
        batches = evals * math.ceil(n / BARRIER_BATCH)
        w = Work(barriers=1 if points is None else 0, simplices=0 if points is None else 1, flops=flops,
                 seconds=_seconds({precision: flops}, batches, "eval_batch_floor_s"))
        return w * count

    def wm(self, count: float = 1.0) -> Work:
        sec = _seconds({}, 0, "eval_batch_floor_s", self.net.wm_n3)
        return Work(wm=1, seconds=sec, cpu_seconds=sec) * count

    def am(self, count: float = 1.0) -> Work:
        fwd = 2 * self.net.forward_flops * self.n_train
        gram = self.net.am_gram_flops * self.n_train  # one cross Gram per group: sum_s a_s b_s^T
        batches = 2 * math.ceil(self.n_train / AM_BATCH)
        return Work(am=1, flops=fwd + gram,
                    seconds=_seconds({"tf32": fwd, "fp64": gram}, batches, "eval_batch_floor_s")) * count

    def features(self, count: float, forwards: float, fp64_forwards: float = 0.0, n: int = DEFAULT_N_EXAMPLES) -> Work:
        """Feature statistics (Zhou et al.): ``forwards`` fp32 passes (and ``fp64_forwards`` float64 ones) over
        ``n`` test examples, in batches of 32 for conv nets (lmccheck.llfc.CONV_BATCH)."""
        f32 = self.net.forward_flops * forwards * n
        f64 = self.net.forward_flops * fp64_forwards * n
        batch = CONV_BATCH if self.net.conv else 1000
        batches = (forwards + fp64_forwards) * math.ceil(n / batch)
        return Work(features=1, flops=f32 + f64, seconds=_seconds({"tf32": f32, "fp64": f64}, batches,
                                                                  "eval_batch_floor_s")) * count


# ------------------------------------------------------------------------------------- product families
AT_DEFAULT = "@10k"


def family_key(family: str, ctx: Ctx) -> str:
    """The store identity of a family on a setting: a barrier family taken on the lab's default 10k examples
    is the setting's own where the setting evaluates on 10k examples too."""
    if family.endswith(AT_DEFAULT) and ctx.eval == DEFAULT_N_EXAMPLES:
        return family[: -len(AT_DEFAULT)]
    return family


#: A product family: the products a claim asks for, per unit (a seed, a triple, or once), on one recipe.
#: Each returns the Work of one unit. Families named alike on one recipe are the same store products.
FAMILIES: dict[str, Callable[[Ctx], Work]] = {
    # pairs A, B of replicate r from 0 to the end: fixtures/lab.py:155-158 Lab.pair/pairs (S2-S6, S8-S12, Z1-Z10)
    "pair": lambda c: c.train(2),
    # P_end by weight and activation matching of the pair's end states (S3:73, S4:217, S5:298-299, S6:440-441,
    # S8:215, S10:296, S11:151, S12:426, Z _pairs)
    "wm_end": lambda c: c.wm(),
    "am_end": lambda c: c.am(),
    # end-of-training test and train barriers, unaligned and under each P_end (S3:76 at t = end; S5:308 at level
    # 0, where P(0) is the dense WM; S4:219 the parents; S8:237-239; S10:297; S11:147-152; Z _end_barrier, the premise)
    **{f"b_end_{sp}_{s}": (lambda c: c.barrier()) for sp in ("test", "train") for s in ("un", "wm", "am")},
    # the same at every checkpoint before the end (S3:76; test ones also S8:235-239, S11:152 for wm/am)
    **{f"b_traj_{sp}_{s}": (lambda c: c.barrier(c.T - 1)) for sp in ("test", "train") for s in ("un", "wm", "am")},
    # S11 takes these on the lab's default 10k examples (no n_examples passed): the same products where the
    # setting's own evaluation size is 10k (every full-size setting), others under a reduced budget (see KEY_AT)
    **{f"b_end_test_{s}{AT_DEFAULT}": (lambda c: c.barrier(n=DEFAULT_N_EXAMPLES)) for s in ("un", "wm", "am")},
    **{f"b_traj_test_{s}{AT_DEFAULT}": (lambda c: c.barrier(c.T - 1, n=DEFAULT_N_EXAMPLES)) for s in ("wm", "am")},
    # S2 (claims/test_s1_s2_symmetry.py:150-184): pair 0; weight matching P[A] onto A (:166, not a product: done
    # on every run); 9 distinct fp32 barriers (:177-184: base, joint, slc, wlc, f0_pair, slc_f0_paper, slc_f0,
    # and Entezari's P candidate twice; its identity candidate repeats f0_pair and slc_f0_paper)
    "s2_wm": lambda c: c.wm(),
    "s2_barriers": lambda c: c.barrier(9, precision="tf32"),
    # S4 (claims/test_s4_children.py:221-228): per spawn time (every checkpoint before the end), children A^1,
    # A^2 of A and B^1 of B, and 6 barriers (instability, unaligned, aligned x2, parent-child x2)
    "s4_children": lambda c: c.trained_from(t for t in c.spawn_times for _ in range(3)),
    "s4_barriers": lambda c: c.barrier(6 * len(c.spawn_times)),
    # S5 (claims/test_s5_s6_imp.py:175-181, 297-311): IMP of A and B, levels 1..L, each retrained from k';
    # sparse-sparse WM P(i) per level (P(0) is the dense WM); per level 4 series x 2 splits of barriers
    "imp": lambda c: c.train(2 * c.levels, c.rewind),
    "wm_imp_s6": lambda c: c.wm(len(c.s6_levels)),  # P(i) at S6's levels (S6:450)
    "wm_imp_rest": lambda c: c.wm(c.levels - len(c.s6_levels)),
    "b_imp_wm_test_s6": lambda c: c.barrier(len(c.s6_levels)),  # A(i) vs P[B(i)], test: S6's "P B(i)" (:469)
    "b_imp_rest": lambda c: c.barrier(8 * c.levels - len(c.s6_levels)),
    # S6 (claims/test_s5_s6_imp.py:443-474): per measured level (every second), 5 retrainings from k'
    # (transported WM and AM, control, one-shot, sparse-sparse) and 5 new test barriers
    "s6_retrains": lambda c: c.train(S6_SERIES_TRAINED * len(c.s6_levels), c.rewind),
    "s6_barriers": lambda c: c.barrier(S6_BARRIERS_NEW * len(c.s6_levels)),
    # S8 (claims/test_s8_s12_early_permutations.py:214-239): P_t by WM and AM at every checkpoint before the end
    # (at the end P_t is P_end); barriers at the end and at t under each P_t; seed 0's trajectories under P_t
    # for the checkpoints nearest 5% and 20% of training (their t and end points are the rows above)
    "wm_pt_early": lambda c: c.wm(len(c.early_times)),  # S8:221, S12:430
    "wm_pt_late": lambda c: c.wm(len(c.s10_times)),  # S8:221, S12:430, S10:306
    "am_pt": lambda c: c.am(c.T - 1),
    "b_pt_end_wm_early": lambda c: c.barrier(len(c.early_times)),
    "b_pt_end_wm_late": lambda c: c.barrier(len(c.s10_times)),  # also S10:307
    "b_pt_at_t_wm": lambda c: c.barrier(c.T - 1),
    "b_pt_end_am": lambda c: c.barrier(c.T - 1),
    "b_pt_at_t_am": lambda c: c.barrier(c.T - 1),
    "s8_trajectories": lambda c: c.barrier(2 * len(c.s8_traj_times) * (c.T - 2)),
    # S9 (claims/test_s9_pruned_matching.py:175-190): per checkpoint (10%, 40%, 100%), WM of pruned pairs at
    # 8 sparsities x 2 methods (p = 0 once) plus a second solve at p = 0: 16 matchings and 16 end barriers
    "s9": lambda c: (c.wm(S9_PER_TIME) + c.barrier(S9_PER_TIME)) * len(c.s9_times),
    # S10 (claims/test_s10_layerwise_alignment.py:295-318): per rewind time (checkpoints from 1 epoch) and
    # (mode, k): WM of the hybrids and its end barrier, plus the spliced permutation's barrier where layer and
    # group indices agree (VGG); P_end re-solved with 4 more sweep orders, each with its barrier
    "s10_hybrids": lambda c: (c.wm() + c.barrier(2 if c.net.layer_groups_align else 1)) * c.s10_points,
    "s10_restarts": lambda c: (c.wm() + c.barrier()) * (len(S10_RESTART_SEEDS) - 1),
    # S11 (claims/test_s11_stability_regimes.py:139-154): a child of A at 0 and its instability barrier
    # (10k examples: the lab's default, no n_examples passed)
    "s11_child": lambda c: c.train(1, 0.0),
    "s11_instability": lambda c: c.barrier(1, n=DEFAULT_N_EXAMPLES),
    # S7 / S12 (claims/test_s7_s12_strong_connectivity.py:124-130, 142-160, 178-199), per triple: A, B, C;
    # P_B->A, P_A->C, P_B->C by WM and AM (S12 uses these); P_C->A by each (S7's second triangle); 18 barriers
    # on the default 10k examples (unaligned, direct and indirect per method on test and train; 2 new edges per
    # triangle and method) and 4 simplex barriers (2 triangles x 2 methods)
    "triple_nets": lambda c: c.train(3),
    "triple_matchings": lambda c: c.wm(3) + c.am(3),
    "s7_extra": lambda c: (c.wm() + c.am() + c.barrier(18, n=DEFAULT_N_EXAMPLES)
                           + c.barrier(4, n=DEFAULT_N_EXAMPLES,
                                       points=len(simplex_grid(3, S7_SIMPLEX[0], c.setting.alphas - 1)))),
    # Zhou's claims (claims/llfc_pairs.py and the test_z1_z3_, test_z6_z7_z10_, test_z8_z9_ files, under edit:
    # functions named, not lines): _pairs, two children of A spawned at 5 epochs; _end_barrier, the premise's
    # children barrier; feature statistics per pair kind (spawned, WM, AM, independent) on the lab's default 10k
    # test examples: _llfc_stats (Z1-Z3), weak additivity (Z6), _commutativity (Z7, Z10), stitching of the spawned
    # pair (Z8); _render_z9's spectra of seed 0's A after 1 epoch and at the end. The decomposition (Z7) and
    # commutativity matching (Z10) run on MLPs only (_cm_applies).
    "z_children": lambda c: c.train(2, c.z_spawn),
    "b_z_spawned": lambda c: c.barrier(),
    "f_llfc": lambda c: c.features(Z_KINDS, 5),
    "f_weak": lambda c: c.features(Z_KINDS, 2),
    "f_com": lambda c: c.features(Z_KINDS, 2, fp64_forwards=4),
    "f_stitch": lambda c: c.features(1, 2 + c.net.stitch_sites),
    "f_spectra": lambda c: c.features(2, 1),
}

SEED, ONCE, TRIPLE = "seed", "once", "triple"


@dataclass(frozen=True)
class Check:
    """A claim check: its claim id, the GPU settings it is parametrized over, and the product families it needs
    on each (family, unit): ``seed`` = once per replicate (``--lmc-seeds``), ``triple`` = per triple, ``once``."""

    function: str
    claim: str
    settings: tuple[str, ...]
    needs: tuple[tuple[str, str], ...]
    table: str = "GPU"


def _seeded(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((n, SEED) for n in names)


END_TEST = _seeded("b_end_test_un", "b_end_test_wm", "b_end_test_am")
END_TRAIN = _seeded("b_end_train_un", "b_end_train_wm", "b_end_train_am")
Z_PAIRS = _seeded("pair", "z_children", "wm_end", "am_end")  # claims/llfc_pairs.py _pairs
Z_PREMISE = END_TEST + _seeded("b_z_spawned")  # claims/llfc_pairs.py _premise
Z_SETTINGS = ("vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "resnet20x32-ln-cifar10", "vgg16-ln-fmnist",
              "resnet20x4-ln-fmnist")  # claims/llfc_pairs.py SETTINGS_GPU
SPARSE = ("vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "vgg16-ln-fmnist", "resnet20x4-ln-fmnist")  # settings.py:32
TRAJ = ("vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "vgg16-ln-fmnist")  # S3:38, S8:115
IMP = _seeded("pair", "wm_end", "am_end", "imp", "wm_imp_s6", "b_imp_wm_test_s6")

#: every GPU check: (test function, claim id, its GPU settings (the params(...) line), the families it needs)
CHECKS: tuple[Check, ...] = (
    Check("test_s2_slc_implies_wlc_and_f0", "S2", ("vgg16-ln-cifar10",),  # test_s1_s2_symmetry.py:189
          (("pair", ONCE), ("s2_wm", ONCE), ("s2_barriers", ONCE))),
    Check("test_s3_end_permutation_aligns_trajectory", "S3", TRAJ,  # test_s3_trajectory.py:37-39
          _seeded("pair", "wm_end", "am_end") + END_TEST + END_TRAIN
          + _seeded(*(f"b_traj_{sp}_{s}" for sp in ("test", "train") for s in ("un", "wm", "am")))),
    Check("test_s4_end_permutation_aligns_children_after_onset", "S4",  # test_s4_children.py:101-105
          ("vgg16-ln-cifar10-instability", "resnet20x4-ln-cifar10-instability", "vgg16-ln-fmnist-instability"),
          _seeded("pair", "wm_end", "am_end", "b_end_test_wm", "b_end_test_am", "s4_children", "s4_barriers")),
    Check("test_s5_dense_permutation_aligns_every_imp_level", "S5", SPARSE,  # test_s5_s6_imp.py:246
          IMP + END_TEST + END_TRAIN + _seeded("wm_imp_rest", "b_imp_rest")),
    Check("test_s6_imp_masks_transport_modulo_permutation", "S6", SPARSE,  # test_s5_s6_imp.py:373
          IMP + _seeded("s6_retrains", "s6_barriers")),
    Check("test_s7_indirect_alignment_improves_with_width_but_stays_above_direct", "S7",  # s7_s12:309-311
          tuple(WIDTHS_GPU), (("triple_nets", TRIPLE), ("triple_matchings", TRIPLE), ("s7_extra", TRIPLE)),
          table="WIDTHS_GPU"),
    Check("test_s12_direct_and_indirect_permutations_share_few_fixed_points", "S12",  # s7_s12:443-444
          tuple(WIDTHS_GPU), (("triple_nets", TRIPLE), ("triple_matchings", TRIPLE)), table="WIDTHS_GPU"),
    Check("test_s8_weight_matching_fails_early", "S8", TRAJ,  # test_s8_s12_early_permutations.py:114-126
          _seeded("pair", "wm_end", "am_end", "b_traj_test_un", "b_traj_test_wm", "b_traj_test_am", "wm_pt_early",
                  "wm_pt_late", "am_pt", "b_pt_end_wm_early", "b_pt_end_wm_late", "b_pt_at_t_wm", "b_pt_end_am",
                  "b_pt_at_t_am") + END_TEST + (("s8_trajectories", ONCE),)),
    Check("test_s12_fixed_points_grow_with_t_and_early_layers_lead", "S12",  # s8_s12:357-358
          ("vgg16-ln-cifar10", "resnet20x4-ln-cifar10", "mlp512x6-fmnist"),
          _seeded("pair", "wm_end", "wm_pt_early", "wm_pt_late")),
    Check("test_s9_weight_matching_relies_on_large_weights", "S9", SPARSE,  # test_s9_pruned_matching.py:104
          _seeded("pair", "s9")),
    Check("test_s10_weight_matching_aligns_lower_layers_earlier", "S10",  # test_s10_layerwise_alignment.py:151-153
          ("vgg16-ln-cifar10", "resnet20x4-ln-cifar10"),
          _seeded("pair", "wm_end", "b_end_test_wm", "wm_pt_late", "b_pt_end_wm_late", "s10_hybrids", "s10_restarts")),
    Check("test_s11_stability_at_init_is_neither_necessary_nor_sufficient", "S11",  # test_s11_stability_regimes.py:85
          tuple(REGIMES_GPU), _seeded("pair", "s11_child", "s11_instability", "wm_end", "am_end",
                                      *(f"{f}{AT_DEFAULT}" for f in ("b_end_test_un", "b_end_test_wm", "b_end_test_am",
                                                                     "b_traj_test_wm", "b_traj_test_am"))),
          table="REGIMES_GPU"),
    *(Check(fn, cid, Z_SETTINGS, Z_PAIRS + extra) for fn, cid, extra in (  # claims/test_z*.py test_z*
        ("test_z1_llfc_cosine_is_near_zero_in_every_layer", "Z1", Z_PREMISE + _seeded("f_llfc")),
        ("test_z2_lmc_pairs_are_llfc_and_independent_pairs_are_not", "Z2", Z_PREMISE + _seeded("f_llfc")),
        ("test_z3_llfc_scale_is_close_to_one", "Z3", Z_PREMISE + _seeded("f_llfc")),
        ("test_z6_weak_additivity_holds_for_lmc_pairs", "Z6", Z_PREMISE + _seeded("f_weak")),
        ("test_z7_commutativity_holds_for_lmc_pairs", "Z7", Z_PREMISE + _seeded("f_com")),
        ("test_z10_matching_establishes_commutativity", "Z10", _seeded("f_com")),
        ("test_z8_stitching_without_a_stitching_layer_works_for_llfc_pairs", "Z8",
         _seeded("b_z_spawned", "f_stitch")),
    )),
    # Z9 (claims/test_z8_z9_stitching_rank.py test_z9_..., _render_z9): the pairs (no children) and seed 0's spectra
    Check("test_z9_trained_weights_have_lower_stable_rank_than_early_ones", "Z9", Z_SETTINGS,
          (("pair", SEED), ("f_spectra", ONCE))),
)

TABLES: dict[str, dict[str, Setting | WidthFamily | Regimes]] = {
    "GPU": GPU, "WIDTHS_GPU": WIDTHS_GPU, "REGIMES_GPU": REGIMES_GPU}  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------- the estimate
Key = tuple[tuple, str]  # (recipe identity, family)


@dataclass
class CheckCost:
    """One parametrized check: its id, row and needs (product group -> units)."""

    claim: str
    function: str
    param: str
    label: str
    needs: dict[Key, int]


@dataclass
class Estimate:
    seeds: int
    budget: str
    checks: list[CheckCost]
    groups: dict[Key, tuple[Ctx, str]]  # key -> (context, row)
    rows: list[str]

    _cache: dict[Key, Work] = field(default_factory=dict)

    def work_of(self, key: Key, units: int) -> Work:
        if key not in self._cache:
            self._cache[key] = FAMILIES[key[1]](self.groups[key][0])
        return self._cache[key] * units

    def union(self, checks: Iterable[CheckCost]) -> dict[Key, int]:
        out: dict[Key, int] = {}
        for c in checks:
            for k, u in c.needs.items():
                out[k] = max(out.get(k, 0), u)
        return out

    def cost(self, checks: Iterable[CheckCost]) -> Work:
        return sum((self.work_of(k, u) for k, u in self.union(checks).items()), ZERO)

    def row_work(self) -> dict[str, Work]:
        out = {r: ZERO for r in self.rows}
        for k, u in self.union(self.checks).items():
            row = self.groups[k][1]
            out[row] = out[row] + self.work_of(k, u)
        return out

    def row_claims(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r: [] for r in self.rows}
        for c in self.checks:
            for k in c.needs:
                r = self.groups[k][1]
                if c.claim not in out[r]:
                    out[r].append(c.claim)
        return out

    @property
    def total(self) -> Work:
        return self.cost(self.checks)


def _members(obj: Setting | WidthFamily | Regimes) -> tuple[Setting, ...]:
    return (obj,) if isinstance(obj, Setting) else tuple(obj.settings)


def _units(unit: str, seeds: int) -> int:
    return {SEED: seeds, TRIPLE: seeds, ONCE: 1}[unit]


def estimate(seeds: int = DEFAULT_SEEDS, budget: str = "full") -> Estimate:
    """The checks of ``pytest claims -m gpu`` at ``--lmc-seeds seeds`` and ``--lmc-budget budget`` (full or a
    reduced budget, whose checks are deduplicated by recipe like ``claims.settings.params``)."""
    groups: dict[Key, tuple[Ctx, str]] = {}
    rows: list[str] = []
    row_of: dict[tuple, str] = {}
    # rows: one per recipe, named by the first table entry that trains it (a width family is one row)
    for table in ("GPU", "REGIMES_GPU", "WIDTHS_GPU"):
        for name, obj in TABLES[table].items():
            obj = reduce(obj, budget) if budget != "full" else obj
            for s in _members(obj):
                ident = identity(s)
                if ident not in row_of:
                    family = name if budget == "full" else f"{name}-{budget}"
                    row_of[ident] = family if table == "WIDTHS_GPU" else s.name
                    if row_of[ident] not in rows:
                        rows.append(row_of[ident])
    checks: list[CheckCost] = []
    for chk in CHECKS:
        seen: set[tuple] = set()
        for name in chk.settings:
            obj = TABLES[chk.table][name]
            if budget != "full":
                obj = reduce(obj, budget)
                if identity(obj) in seen:  # claims/settings.py:70-76: once per reduced recipe
                    continue
                seen.add(identity(obj))
            needs: dict[Key, int] = {}
            for s in _members(obj):
                ctx = Ctx(s)
                for fam, unit in chk.needs:
                    key = (identity(s), family_key(fam, ctx))
                    groups.setdefault(key, (ctx, row_of[identity(s)]))
                    needs[key] = max(needs.get(key, 0), _units(unit, seeds))
            param = name if budget == "full" else obj.name  # the pytest id (claims/settings.py:66-76)
            label = f"{param} (regimes)" if chk.table == "REGIMES_GPU" else param
            checks.append(CheckCost(chk.claim, chk.function, param, label, needs))
    return Estimate(seeds, budget, checks, groups, [r for r in rows if any(g[1] == r for g in groups.values())])


def greedy(est: Estimate, hours: float, scenario: int = len(SCENARIOS) - 1) -> tuple[list[CheckCost], Work]:
    """Checks added cheapest first (by the marginal cost given the ones chosen, in ``scenario``: products the
    chosen checks built already cost nothing) while the total stays within ``hours``."""
    chosen: list[CheckCost] = []
    have: dict[Key, int] = {}
    spent = 0.0
    left = list(est.checks)

    unit = {k: est.work_of(k, 1).seconds[scenario] for c in left for k in c.needs}

    def marginal(c: CheckCost) -> float:
        return sum((u - have.get(k, 0)) * unit[k] for k, u in c.needs.items() if u > have.get(k, 0))

    while left:
        sec, i = min((marginal(c), i) for i, c in enumerate(left))
        if spent + sec > hours * 3600:
            break
        spent += sec
        c = left.pop(i)
        chosen.append(c)
        for k, u in c.needs.items():
            have[k] = max(have.get(k, 0), u)
    return chosen, est.cost(chosen)


def _claim_order(claim: str) -> tuple[str, int]:
    return claim[0], int(claim[1:])


def covered(checks: Sequence[CheckCost]) -> str:
    """The checks per setting, in the order the greedy choice reached the setting."""
    by: dict[str, list[str]] = {}
    for c in checks:
        by.setdefault(c.label, [])
        if c.claim not in by[c.label]:
            by[c.label].append(c.claim)
    return "; ".join(f"{p}: {', '.join(sorted(cs, key=_claim_order))}" for p, cs in by.items())


# ------------------------------------------------------------------------------------------------ output
def _h(seconds: Sequence[float]) -> str:
    def one(s: float) -> str:
        h = s / 3600
        return f"{h:,.0f}" if h >= 100 else f"{h:.1f}" if h >= 1 else f"{h:.2f}"
    return "–".join(one(s) for s in seconds)


def _n(x: float) -> str:
    return f"{x:,.0f}"


def row_table(est: Estimate, minutes: bool = False) -> list[str]:
    """The Markdown table of an estimate: one row per recipe (a width family is one row) and the total."""
    unit = "min" if minutes else "hours"

    def t(sec: Sequence[float]) -> str:
        return "–".join(f"{x / 60:.1f}" for x in sec) if minutes else _h(sec)

    out = ["| setting | claims | trainings (epochs) | barriers (+ simplex) | matchings WM / AM | feature stats "
           f"| PFLOP | H100 {unit} |", "|---|---|---|---|---|---|---|---|"]
    rw, rc = est.row_work(), est.row_claims()
    for r in est.rows:
        w = rw[r]
        simplex = f" (+{_n(w.simplices)})" if w.simplices else ""
        out.append(f"| {r} | {', '.join(sorted(rc[r], key=_claim_order))} | {_n(w.trainings)} ({_n(w.epochs)}) | "
                   f"{_n(w.barriers)}{simplex} | {_n(w.wm)} / {_n(w.am)} | {_n(w.features)} | {_pf(w.flops)} | "
                   f"{t(w.seconds)} |")
    w = est.total
    out.append(f"| **total** | {len(est.checks)} checks | {_n(w.trainings)} ({_n(w.epochs)}) | {_n(w.barriers)} "
               f"(+{_n(w.simplices)}) | {_n(w.wm)} / {_n(w.am)} | {_n(w.features)} | {_pf(w.flops)} | "
               f"**{t(w.seconds)}** |")
    return out


def _pf(flops: float) -> str:
    return f"{flops / 1e15:,.0f}" if flops >= 1e16 else f"{flops / 1e15:.1f}"


def markdown(seeds: int = DEFAULT_SEEDS) -> str:
    full = estimate(seeds)
    smoke = estimate(REDUCED_SEEDS, "smoke")
    scen = ", ".join(f"{s.name} {s.mfu:.0%} MFU" for s in SCENARIOS)
    t, ts = full.total, smoke.total
    out = [f"Paper-scale GPU tier (`pytest claims -m gpu`, `--lmc-seeds {seeds}`): the distinct products of each "
           f"recipe (a product several checks share counted once), their FLOPs, and time on one H100 SXM ({scen}; "
           "a range: fast–slow).", "", *row_table(full), "",
           f"Of the total, weight matching's assignment solves on the host CPU: {_h(t.cpu_seconds)} hours.", "",
           f"`--lmc-budget smoke` (`--lmc-seeds {REDUCED_SEEDS}`, {len(smoke.checks)} checks):", "",
           *row_table(smoke, minutes=True), "",
           f"What a budget covers ({SCENARIOS[-1].name} scenario; full-scale checks added cheapest first by their "
           "marginal cost, products already built costing nothing):", "",
           "| budget | the smoke tier fits | full-scale checks that fit | their hours |", "|---|---|---|---|"]
    for label, hours in BUDGETS_H.items():
        chosen, work = greedy(full, hours)
        fits = "yes" if ts.seconds[-1] <= hours * 3600 else (
            "fast scenario only" if ts.seconds[0] <= hours * 3600 else "no")
        out.append(f"| {label} | {fits} | {len(chosen)}: {covered(chosen) or 'none'} | {_h(work.seconds)} |")
    out.append(f"| full tier | yes | all {len(full.checks)} | {_h(t.seconds)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"--lmc-seeds (default {DEFAULT_SEEDS})")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables to this file")
    args = parser.parse_args(argv)
    text = markdown(args.seeds)
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
        print(f"gpu_cost: wrote {args.markdown}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
