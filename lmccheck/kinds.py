"""The product kinds lmccheck ships, each next to the code that builds it.

Networks (decode to a :class:`~lmccheck.training.Run`, select a checkpoint
with ``Ref(product, at=t)``):

* ``train``: a training run of a :class:`~lmccheck.training.TrainConfig`; its
  recipe is the config's recipe, as before products existed.
* ``spawn``: a child of a network at a checkpoint, with new SGD noise.
* ``imp_level``: one level of iterative magnitude pruning with rewinding; it
  takes the previous level (or the dense run, for level 1) as input, so every
  level is its own store entry.
* ``retrain``: a rewound network retrained under a mask taken from another
  network (an IMP level's mask, optionally permuted by a matching: mask
  transport), or one-shot pruned from another network's final weights.
* ``hybrid``: a state that takes some entries from one checkpoint and the
  rest from another (partial rewinding).
* ``pruned``: a checkpoint with a fraction of its weights pruned in one step, by
  magnitude or at random (App. H.2).
* ``masked``: a checkpoint under another network's (optionally permuted) or a
  one-shot mask, without training (App. F 5(a)).

Measurements:

* ``matching``: a permutation aligning network ``b`` onto ``a`` (weight or
  activation matching).
* ``barrier``: loss and error along the linear path between two (optionally
  permuted) networks, Sharma et al. Eq. (1).
* ``simplex_barrier``: the same over the simplex spanned by N networks.

Each ``*_product`` function declares a product without building anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .barrier_curves import BarrierResult, SimplexResult
from .barrier_options import DEFAULT_OPTIONS, BarrierOptions, ResolvedBarrier
from .interpolation import barrier, simplex_barrier
from .llfc import DEFAULT_ALPHAS as LLFC_ALPHAS
from .llfc import commutativity, llfc, llfc_decomposition, spectra, stitching_errors, weak_additivity
from .commutativity_matching import commutativity_matching
from .activation_matching import activation_matching
from .weight_matching import weight_matching
from .models import PermutableModel
from .permutation import Permutation, PermutationSpec
from .products import Kind, Literal, Product, Ref, register, tensor_digest
from .pruning import (
    apply_mask,
    check_prune_once,
    dense_mask,
    magnitude_prune,
    one_shot_prune,
    permute_mask,
    prunable_keys,
    prune_once,
    retrain_with_mask,
    sparsity,
)
from .store import Entry
from .training import Run, TrainConfig, build_model, spawn, train

if TYPE_CHECKING:  # builder.py imports this module (to register the kinds): one direction at run time
    from .builder import Builder

__all__ = [
    "MATCHING_METHODS",
    "arch_spec",
    "barrier_product",
    "config_of",
    "derived_seed",
    "describe_networks",
    "feature_product",
    "hybrid_product",
    "imp_level_product",
    "masked_product",
    "matching_product",
    "network_ref",
    "permutation_input",
    "pruned_product",
    "retrain_product",
    "simplex_product",
    "spawn_product",
    "train_product",
]

MATCHING_METHODS = ("weight", "activation", "commutativity")
NETWORK_KINDS = ("train", "spawn", "imp_level", "retrain", "hybrid", "pruned", "masked")


def derived_seed(base: int, *salt: Any) -> int:
    """A 31-bit seed derived from ``base`` and ``salt`` (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr((int(base), *salt)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**31 - 1)


# --------------------------------------------------------------------------- configs of networks
def config_of(product: Product, device: str = "cpu") -> TrainConfig:
    """The training recipe a network product follows (for ``spawn``: the child's SGD seed), without building."""
    p = product.params
    if product.kind == "train":
        return TrainConfig.from_recipe(p, device=device)
    if product.kind == "spawn":
        return config_of(_ref(product, "parent").product, device).replace(sgd_seed=int(p["sgd_seed"]))
    if product.kind == "imp_level":
        return config_of(_ref(product, "dense").product, device).replace(sgd_seed=int(p["sgd_seed"]))
    if product.kind == "retrain":
        return config_of(_ref(product, "init").product, device).replace(sgd_seed=int(p["sgd_seed"]))
    if product.kind == "hybrid":
        return config_of(_ref(product, "late").product, device)
    if product.kind == "pruned":
        return config_of(_ref(product, "source").product, device)
    if product.kind == "masked":
        return config_of(_ref(product, "net").product, device)
    raise ValueError(
        f"a {product.kind} product is not a network; pass a train/spawn/imp_level/retrain/hybrid/pruned/masked product"
    )


def _ref(product: Product, name: str) -> Ref:
    value = product.inputs.get(name)
    if not isinstance(value, Ref):
        raise ValueError(f"{product.kind} product {product.short} has no network input {name!r}")
    return value


def _refs(product: Product, name: str) -> tuple[Ref, ...]:
    value = product.inputs.get(name)
    if not isinstance(value, tuple) or not all(isinstance(v, Ref) for v in value):
        raise ValueError(f"{product.kind} product {product.short} has no network inputs {name!r}")
    return value


def describe_networks(product: Product) -> str:
    """The networks a product is made from, by their seeds and checkpoint: ``"1000/2000@0.25 vs 1001/2001@5"``
    (init seed / SGD seed @ epoch; a network other than a training run names its kind). Empty for a
    training run, which names its own seeds."""
    parts = []
    for ref in product.refs():
        p = ref.product
        if p.kind not in NETWORK_KINDS:
            continue
        cfg = config_of(p)
        when = product.params["at_epoch"] if product.kind == "spawn" else ref.at  # a child starts at its spawn
        at = "" if when is None else f"@{when:g}"
        parts.append(f"{cfg.init_seed}/{cfg.sgd_seed}{'' if p.kind == 'train' else ' ' + p.kind}{at}")
    text = " vs ".join(parts)
    perm = product.inputs.get("perm")
    what = "the mask transported" if product.kind in ("retrain", "masked") else "the second aligned"
    if isinstance(perm, Ref) and perm.product.kind == "matching":
        text += f", {what} by {perm.product.params['method']} matching"
    elif perm is not None:
        text += f", {what} by a given permutation"
    return text


def network_ref(product: Product, at: float | None = None) -> Ref:
    """``Ref(product, at)``, checking that ``product`` is a network; ``at=None`` becomes the end of training,
    so the end state has one reference (and one key) however it is named."""
    if product.kind not in NETWORK_KINDS:
        raise ValueError(
            f"a {product.kind} product is not a network; measurements take train, spawn, imp_level, "
            "retrain, hybrid, pruned or masked products"
        )
    return Ref(product, config_of(product).epochs if at is None else at)


def _same_architecture(what: str, *refs: Ref) -> TrainConfig:
    """The first network's config, after checking every network has its architecture and dataset."""
    configs = [config_of(r.product) for r in refs]
    first = configs[0]
    for i, c in enumerate(configs[1:], start=1):
        for field_ in ("arch", "model_kwargs", "dataset"):
            if getattr(c, field_) != getattr(first, field_):
                raise ValueError(
                    f"{what}: network {i} has {field_}={getattr(c, field_)!r} but network 0 has "
                    f"{getattr(first, field_)!r}; {what} needs networks of one architecture and dataset"
                )
    return first


def _decode_run(product: Product, entry: Entry, builder: Builder) -> Run:
    run = Run.from_record(config_of(product, builder.device), entry.tensors, entry.meta)
    run.info["store_key"] = product.key
    return run


def _data(builder: Builder, config: TrainConfig) -> Any:
    return builder.dataset(config.dataset)


def _one_state_record(
    config: TrainConfig,
    state: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor] | None,
    info: dict[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A derived network (hybrid, pruned, masked) as a run of one state, filed at the end of training."""
    t = config.epochs
    run = Run(config=config, checkpoints={t: state}, metrics={t: {}}, wall_time_s=0.0, start_epoch=t, mask=mask)
    run.info.update(info or {})
    return run.to_record()


# --------------------------------------------------------------------------- train
def train_product(config: TrainConfig) -> Product:
    """A full training run of ``config`` with its checkpoints (``config.device`` is not part of it)."""
    return Product("train", config.recipe())


def _build_train(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    config = config_of(product, builder.device)
    return train(config, progress=builder.progress, data=_data(builder, config)).to_record()


def _describe_train(product: Product) -> str:
    p = product.params
    kw = ",".join(f"{k}={v}" for k, v in sorted(p["model_kwargs"].items()))
    return f"{p['arch']}({kw}) {p['dataset']} {p['epochs']:g} ep, init_seed={p['init_seed']} sgd_seed={p['sgd_seed']}"


register(Kind("train", 1, _build_train, _decode_run, recipe=lambda p: dict(p.params), describe=_describe_train,
              network=True, phase="training"))


# --------------------------------------------------------------------------- spawn
def spawn_product(parent: Product, at_epoch: float, sgd_seed: int) -> Product:
    """A child of network ``parent`` spawned at ``at_epoch`` and trained to the end with ``sgd_seed``.

    A masked parent (an IMP level) passes its mask on.
    """
    return Product("spawn", {"at_epoch": float(at_epoch), "sgd_seed": int(sgd_seed)},
                   {"parent": network_ref(parent)})


def _build_spawn(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    parent = builder.get(_ref(product, "parent").product)
    p = product.params
    return spawn(parent.config, parent, p["at_epoch"], p["sgd_seed"], progress=builder.progress,
                 data=_data(builder, parent.config)).to_record()


register(Kind("spawn", 1, _build_spawn, _decode_run, network=True, phase="training",
              describe=lambda p: f"at {p.params['at_epoch']:g} ep, sgd_seed={p.params['sgd_seed']}"))


# --------------------------------------------------------------------------- IMP
def imp_level_product(
    dense: Product, level: int, rewind_epoch: float, *, fraction: float = 0.2, include_head: bool = False
) -> Product:
    """IMP level ``level`` (>= 1) of the dense run ``dense``, rewinding to ``rewind_epoch``.

    Level L prunes ``fraction`` of level L-1's remaining prunable weights by
    the magnitude of its trained weights (globally), rewinds the kept weights
    to ``dense`` at ``rewind_epoch`` and retrains with the mask to the end.
    Each level draws its own data order: its SGD seed is derived from the
    dense run's ``sgd_seed`` and the level, and recorded in the recipe.
    """
    if dense.kind != "train":
        raise ValueError(f"IMP starts from a train product, got {dense.kind}")
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"IMP level must be an int >= 1 (level 0 is the dense run), got {level!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    prev = dense if level == 1 else imp_level_product(dense, level - 1, rewind_epoch, fraction=fraction,
                                                      include_head=include_head)
    seed = derived_seed(int(dense.params["sgd_seed"]), "imp_level", level)
    return Product(
        "imp_level",
        {"level": level, "rewind_epoch": float(rewind_epoch), "fraction": float(fraction),
         "include_head": bool(include_head), "sgd_seed": seed},
        {"dense": Ref(dense), "prev": Ref(prev)},
    )


def _build_imp_level(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    dense = builder.get(_ref(product, "dense").product)
    prev = builder.get(_ref(product, "prev").product)
    rewind = float(p["rewind_epoch"])
    rewind_state = dense.state_at(rewind)  # a clear KeyError naming the available times
    final = prev.final
    # the spec names the head: a state read back from the store has its names sorted, so "the last weight"
    # would be the wrong layer (imp_level and retrain versions 1 pruned by that order)
    spec = arch_spec(builder, dense.config)
    mask = prev.mask if prev.mask is not None else dense_mask(final, prunable_keys(final, spec,
                                                                                   include_head=p["include_head"]))
    mask = magnitude_prune(final, mask, p["fraction"])
    run = retrain_with_mask(dense.config, apply_mask(rewind_state, mask), mask, rewind, sgd_seed=p["sgd_seed"],
                            progress=builder.progress, data=_data(builder, dense.config))
    run.info.update({"level": p["level"], "remaining": sparsity(mask).remaining, "rewind_epoch": rewind})
    return run.to_record()


register(Kind("imp_level", 2, _build_imp_level, _decode_run, network=True, phase="training",
              describe=lambda p: f"level {p.params['level']}, rewind to {p.params['rewind_epoch']:g} ep"))


# --------------------------------------------------------------------------- retrain under a mask
def permutation_input(perm: Permutation | Product | None) -> Ref | Literal | None:
    """A permutation as a product input: a matching product by reference, any other by content."""
    if perm is None:
        return None
    if isinstance(perm, Product):
        if perm.kind != "matching":
            raise ValueError(f"expected a matching product, got {perm.kind}")
        return Ref(perm)
    if isinstance(perm, Permutation):
        return Literal(perm, tensor_digest({g: perm.perms[g].to(torch.int64) for g in perm.perms}))
    raise TypeError(f"a permutation must be a Permutation or a matching product, got {type(perm).__name__}")


def retrain_product(
    init: Ref,
    mask_from: Product,
    *,
    perm: Permutation | Product | None = None,
    oneshot_remaining: float | None = None,
    sgd_seed: int | None = None,
) -> Product:
    """The network ``init`` (a checkpoint, e.g. the rewind point) retrained to the end under a mask.

    The mask is ``mask_from``'s own mask (an IMP level), permuted by ``perm``
    when given (mask transport, Sharma et al. App. F); with
    ``oneshot_remaining`` it is instead the one-shot magnitude mask of
    ``mask_from``'s final weights keeping that fraction. Training starts at
    ``init.at`` with ``sgd_seed`` (default: the init network's).
    """
    if init.at is None:
        raise ValueError("retrain needs the checkpoint to start from: Ref(network, at=rewind_epoch)")
    mask_params = _mask_params(oneshot_remaining)
    _same_architecture("retrain", init, Ref(mask_from, 0.0))
    seed = int(config_of(init.product).sgd_seed if sgd_seed is None else sgd_seed)
    return Product(
        "retrain",
        {"start_epoch": init.at, "sgd_seed": seed, **mask_params},
        {"init": network_ref(init.product, init.at), "mask_from": network_ref(mask_from),
         "perm": permutation_input(perm)},
    )


def _mask_params(oneshot_remaining: float | None) -> dict[str, Any]:
    """The params that choose the mask of a ``retrain`` or ``masked`` product (checked)."""
    if oneshot_remaining is not None and not 0.0 < oneshot_remaining <= 1.0:
        raise ValueError(f"oneshot_remaining is the fraction of weights kept, in (0, 1]; got {oneshot_remaining}")
    return {"mask": "oneshot" if oneshot_remaining is not None else "of_network",
            "oneshot_remaining": None if oneshot_remaining is None else float(oneshot_remaining)}


def _resolve_mask(product: Product, builder: Builder) -> dict[str, torch.Tensor]:
    """The mask a ``retrain`` or ``masked`` product applies: ``mask_from``'s own mask or its one-shot magnitude
    mask, permuted by the ``perm`` input when there is one."""
    p = product.params
    source = builder.get(_ref(product, "mask_from").product)
    if p["mask"] == "oneshot":
        mask = one_shot_prune(source.final, p["oneshot_remaining"], spec=arch_spec(builder, source.config))
    else:
        if source.mask is None:
            raise ValueError(
                f"network {_ref(product, 'mask_from').product.short} has no mask; take the mask from an "
                "imp_level product, or use oneshot_remaining"
            )
        mask = source.mask
    perm = builder.resolve(product.inputs.get("perm"))
    return permute_mask(perm, mask) if perm is not None else mask


def _build_retrain(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    init_ref = _ref(product, "init")
    init_run = builder.get(init_ref.product)
    mask = _resolve_mask(product, builder)
    run = retrain_with_mask(init_run.config, builder.state(init_ref), mask, p["start_epoch"], sgd_seed=p["sgd_seed"],
                            progress=builder.progress, data=_data(builder, init_run.config))
    run.info.update({"remaining": sparsity(mask).remaining, "mask": p["mask"],
                     "permuted_mask": product.inputs.get("perm") is not None})
    return run.to_record()


register(Kind("retrain", 2, _build_retrain, _decode_run, network=True, phase="training",
              describe=lambda p: f"from {p.params['start_epoch']:g} ep, mask {p.params['mask']}"))


def masked_product(
    net: Ref,
    mask_from: Product,
    *,
    perm: Permutation | Product | None = None,
    oneshot_remaining: float | None = None,
) -> Product:
    """The checkpoint ``net`` under a mask, without any training: Sharma et al. App. F 5(a)'s ``P B ⊗ M_A``.

    The mask is chosen as by :func:`retrain_product` (``mask_from``'s own mask permuted by ``perm``, or the
    one-shot magnitude mask of ``mask_from``'s final weights keeping ``oneshot_remaining``). Derived on
    demand, never stored.
    """
    mask_params = _mask_params(oneshot_remaining)
    ref = network_ref(net.product, net.at)
    _same_architecture("masked", ref, Ref(mask_from, 0.0))
    return Product(
        "masked",
        mask_params,
        {"net": ref, "mask_from": network_ref(mask_from), "perm": permutation_input(perm)},
    )


def _build_masked(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ref = _ref(product, "net")
    run = builder.get(ref.product)
    mask = _resolve_mask(product, builder)
    return _one_state_record(run.config, apply_mask(builder.state(ref), mask), mask,
                             {"remaining": sparsity(mask).remaining, "mask": product.params["mask"]})


# a masked checkpoint is a stored state times a mask: derived on demand, never stored
register(Kind("masked", 1, _build_masked, _decode_run, network=True, phase="other", stored=False,
              describe=lambda p: f"mask {p.params['mask']}, not retrained"))


# --------------------------------------------------------------------------- hybrids
def hybrid_product(early: Ref, late: Ref, early_keys: Sequence[str]) -> Product:
    """A state taking the entries ``early_keys`` from ``early`` and every other entry from ``late``.

    Sharma et al. App. H.3's partial rewinding: some weight layers from time t,
    the rest from the end of training.
    """
    _same_architecture("hybrid", early, late)
    return Product("hybrid", {"early_keys": sorted(set(early_keys))},
                   {"early": network_ref(early.product, early.at), "late": network_ref(late.product, late.at)})


def _build_hybrid(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    early, late = builder.state(_ref(product, "early")), builder.state(_ref(product, "late"))
    late_run = builder.get(_ref(product, "late").product)
    unknown = [k for k in product.params["early_keys"] if k not in late]
    if unknown:
        raise ValueError(f"hybrid: {unknown[0]!r} is not a state-dict entry of the network")
    state = {k: (early[k] if k in product.params["early_keys"] else v).clone() for k, v in late.items()}
    return _one_state_record(late_run.config, state, late_run.mask)


# a hybrid is a dictionary merge of two stored checkpoints: derived on demand, never stored
register(Kind("hybrid", 1, _build_hybrid, _decode_run, network=True, phase="other", stored=False,
              describe=lambda p: f"{len(p.params['early_keys'])} entries rewound"))


# --------------------------------------------------------------------------- one-shot pruned copies
def pruned_product(source: Ref, fraction: float, method: str = "magnitude", *, include_head: bool = True) -> Product:
    """The network ``source`` (a checkpoint) with a ``fraction`` of its weights set to 0 in one step, globally.

    Sharma et al. App. H.2: prune "a fraction p of the smallest weights in each model" (``magnitude``), or
    the same number at random (``random``), "globally over the smallest magnitude weights from all layers"
    (so the classifier head is included by default; biases and norm parameters are never pruned). The
    random choice is seeded from the source network's SGD seed, the checkpoint and ``fraction``, and recorded.
    """
    p = check_prune_once(fraction, method)
    ref = network_ref(source.product, source.at)
    seed = derived_seed(int(config_of(source.product).sgd_seed), "pruned", ref.at, p) if method == "random" else 0
    return Product("pruned", {"fraction": p, "method": method, "seed": seed, "include_head": bool(include_head)},
                   {"source": ref})


def _build_pruned(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    ref = _ref(product, "source")
    run = builder.get(ref.product)
    state = builder.state(ref)
    mask = prune_once(state, p["fraction"], method=p["method"], seed=p["seed"], include_head=p["include_head"],
                      spec=arch_spec(builder, run.config))
    return _one_state_record(run.config, apply_mask(state, mask), mask,
                             {"remaining": sparsity(mask).remaining, "pruned_from_epoch": ref.at})


# a pruned copy is one masked checkpoint: derived on demand, never stored
# version 2: random scores drawn in sorted key order (version 1 drew them in the state's dict order, so a
# network loaded from the store, names sorted, and one trained in this process got different masks)
register(Kind("pruned", 2, _build_pruned, _decode_run, network=True, phase="other", stored=False,
              describe=lambda p: f"{p.params['method']} p={p.params['fraction']:g}"))


# --------------------------------------------------------------------------- matching
def _arch_model(builder: Builder, config: TrainConfig) -> PermutableModel:
    """One (untrained, CPU) instance per architecture and dataset, for specs and option resolution."""
    arch = json.dumps([config.arch, dict(config.model_kwargs), config.dataset], sort_keys=True, default=str)
    return builder.fact(f"model:{arch}", lambda: build_model(config, builder.dataset(config.dataset)))


def arch_spec(builder: Builder, config: TrainConfig) -> PermutationSpec:
    """The permutation spec of ``config``'s architecture (one cached instance per architecture)."""
    return _arch_model(builder, config).permutation_spec()


def matching_product(
    method: str, a: Ref, b: Ref, *, seed: int = 0, options: Mapping[str, Any] | None = None, device: str = "cpu"
) -> Product:
    """The permutation aligning ``b`` onto ``a`` (apply it to ``b``), by ``method``.

    ``weight``: Greedy-SOBLAP (``seed`` orders the sweeps). ``activation``: on
    the whole training subset of ``a``'s recipe, on ``device``. ``options`` are
    keyword arguments of the matching function (e.g. ``{"stream": "sum"}``).
    """
    if method not in MATCHING_METHODS:
        raise ValueError(f"unknown matching method {method!r}; use 'weight', 'activation' or 'commutativity'")
    config = _same_architecture("matching", a, b)
    params: dict[str, Any] = {"method": method, "seed": int(seed), "options": dict(options or {})}
    inputs: dict[str, Any] = {"a": network_ref(a.product, a.at), "b": network_ref(b.product, b.at)}
    if method in ("activation", "commutativity"):
        params["data"] = {"dataset": config.dataset, "split": "train", "subset": config.train_subset}
        params["device_type"] = torch.device(device).type
    if method == "commutativity":  # a local search from activation matching's permutation (its own product)
        inputs["init"] = Ref(matching_product("activation", a, b, device=device))
        # the search's version: Frank-Wolfe with an exact line search, then 2-opt swaps (products of the earlier
        # Frank-Wolfe-only search are not reused); only commutativity matchings carry it
        params["search"] = "frank-wolfe+2opt"
    return Product("matching", params, inputs)


def _build_matching(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    ra, rb = _ref(product, "a"), _ref(product, "b")
    run_a = builder.get(ra.product)
    sa, sb = builder.state(ra), builder.state(rb)
    ds = builder.dataset(run_a.config.dataset)
    model = _arch_model(builder, run_a.config)  # copied by the matcher, never modified
    if p["method"] == "weight":
        perm = weight_matching(model.permutation_spec(), sa, sb, seed=p["seed"], **p["options"])
    elif p["method"] == "activation":
        data = ds.train.take(p["data"]["subset"])
        perm = activation_matching(model, sa, sb, data, device=builder.device, **p["options"])
    else:
        init = builder.get(_ref(product, "init").product)
        perm = commutativity_matching(model, sa, sb, ds.train.take(p["data"]["subset"]), init=init, **p["options"])
    return {g: t.to(torch.int64) for g, t in perm.perms.items()}, {"stats": perm.stats}


def _decode_matching(product: Product, entry: Entry, builder: Builder) -> Permutation:
    perm = Permutation(arch_spec(builder, config_of(_ref(product, "a").product)), entry.tensors)
    perm.stats = dict(entry.meta.get("stats", {}))
    return perm


register(Kind("matching", 2, _build_matching, _decode_matching, phase="matching",
              describe=lambda p: f"{p.params['method']}"))


# --------------------------------------------------------------------------- barriers
def _resolved_options(config: TrainConfig, options: BarrierOptions, builder: Builder) -> ResolvedBarrier:
    """``options`` resolved for ``config``'s architecture on the builder's device (the model is built once)."""
    return options.resolve(_arch_model(builder, config), builder.device)


def barrier_product(
    a: Ref,
    b: Ref,
    *,
    perm: Permutation | Product | None = None,
    perm_a: Permutation | Product | None = None,
    split: str = "test",
    options: BarrierOptions = DEFAULT_OPTIONS,
    builder: Builder,
) -> Product:
    """Loss/error barrier between ``perm_a[a]`` and ``perm[b]`` on ``split`` of ``a``'s dataset.

    The key holds what changes the numbers (``options.resolve``: examples,
    alphas, BatchNorm reset, precision and device type, for ``builder``'s
    device); the speed options ride along as the product's ``hints`` and are
    never keyed.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    config = _same_architecture("barrier", a, b)
    resolved = _resolved_options(config, options, builder)
    params = {"dataset": config.dataset, "split": split, "options": resolved.key()}
    return Product("barrier", params, {"a": network_ref(a.product, a.at), "b": network_ref(b.product, b.at),
                                       "perm": permutation_input(perm), "perm_a": permutation_input(perm_a)},
                   hints=resolved)


def _permuted_state(builder: Builder, product: Product, ref_name: str, perm_name: str) -> dict[str, torch.Tensor]:
    state = builder.state(_ref(product, ref_name))
    perm = builder.resolve(product.inputs.get(perm_name))
    return perm.apply(state) if perm is not None else state


def _evaluation(product: Product, builder: Builder, model: torch.nn.Module) -> ResolvedBarrier:
    """How to evaluate: the options resolved when the product was declared (its ``hints``), or, for a product
    declared without them, its keyed options resolved again with the default speed settings."""
    if isinstance(product.hints, ResolvedBarrier):
        return product.hints
    return BarrierOptions.from_key(product.params["options"]).resolve(model, builder.device)


def _build_barrier(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    run_a = builder.get(_ref(product, "a").product)
    sa = _permuted_state(builder, product, "a", "perm_a")
    sb = _permuted_state(builder, product, "b", "perm")
    ds = builder.dataset(p["dataset"])
    model = _arch_model(builder, run_a.config)
    res = barrier(model, sa, sb, ds.split(p["split"]), _evaluation(product, builder, model), bn_data=ds.train,
                  split=p["split"])
    return {}, {"result": res.as_dict()}


def _decode_barrier(product: Product, entry: Entry, builder: Builder) -> BarrierResult:
    d = dict(entry.meta["result"])
    d["loss_endpoints"] = tuple(d["loss_endpoints"])
    d["error_endpoints"] = tuple(d["error_endpoints"])
    return BarrierResult(**d)


register(Kind("barrier", 2, _build_barrier, _decode_barrier, phase="evaluation",
              describe=lambda p: f"{p.params['split']}, {len(p.params['options']['alphas'])} alphas x "
                                 f"{p.params['options']['n_examples']} examples"))


def simplex_product(
    nets: Sequence[Ref],
    *,
    perms: Sequence[Permutation | Product | None] | None = None,
    split: str = "test",
    resolution: int = 6,
    edge_resolution: int | None = None,
    options: BarrierOptions = DEFAULT_OPTIONS,
    builder: Builder,
) -> Product:
    """The barrier over the simplex spanned by ``perms[i][nets[i]]`` (Sharma et al. Def. 4.2 for N networks)."""
    if len(nets) < 2:
        raise ValueError(f"a simplex barrier needs at least 2 networks, got {len(nets)}")
    perms = list(perms) if perms is not None else [None] * len(nets)
    if len(perms) != len(nets):
        raise ValueError(f"{len(perms)} permutations for {len(nets)} networks")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    config = _same_architecture("simplex barrier", *nets)
    resolved = _resolved_options(config, options, builder)
    keyed = resolved.key()
    keyed.pop("alphas")  # the resolutions say where a simplex is evaluated
    if resolution < 1 or (edge_resolution is not None and edge_resolution < 1):
        raise ValueError(f"simplex resolutions must be >= 1, got resolution={resolution}, "
                         f"edge_resolution={edge_resolution}")
    params = {"dataset": config.dataset, "split": split, "resolution": int(resolution),
              "edge_resolution": None if edge_resolution is None else int(edge_resolution), "options": keyed}
    return Product("simplex_barrier", params, {
        "nets": tuple(network_ref(r.product, r.at) for r in nets),
        "perms": tuple(permutation_input(p) for p in perms),
    }, hints=options)


def _build_simplex(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    nets = _refs(product, "nets")
    perms = builder.resolve(product.inputs["perms"])
    states = []
    for ref, perm in zip(nets, perms):
        s = builder.state(ref)
        states.append(perm.apply(s) if perm is not None else s)
    run0 = builder.get(nets[0].product)
    ds = builder.dataset(p["dataset"])
    model = _arch_model(builder, run0.config)
    res = simplex_barrier(model, states, ds.split(p["split"]), _evaluation(product, builder, model),
                          resolution=p["resolution"], edge_resolution=p["edge_resolution"], bn_data=ds.train,
                          split=p["split"])
    return {}, {"result": res.as_dict()}


def _decode_simplex(product: Product, entry: Entry, builder: Builder) -> SimplexResult:
    d = dict(entry.meta["result"])
    d["weights"] = [tuple(w) for w in d["weights"]]
    for k in ("loss_argmax_weights", "error_argmax_weights", "vertex_loss", "vertex_error"):
        d[k] = tuple(d[k])
    return SimplexResult(**d)


register(Kind("simplex_barrier", 2, _build_simplex, _decode_simplex, phase="evaluation",
              describe=lambda p: f"{len(_refs(p, 'nets'))} networks, {p.params['split']}"))


# ---------------------------------------------------------------- feature statistics (Zhou et al.)
def _spectra_of_a(model: Any, state_a: Any, state_b: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
    """The spectra of network A alone (B is A: see :func:`feature_product`)."""
    return spectra(model, state_a, data, **kwargs)


#: the layerwise metrics of :mod:`lmccheck.llfc` a feature product can hold
FEATURE_METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "llfc": llfc,
    "weak_additivity": weak_additivity,
    "commutativity": commutativity,
    "stitching": stitching_errors,
    "decomposition": llfc_decomposition,
    "spectra": _spectra_of_a,
}
#: the metrics of one network: A and B are the same network, without a permutation
_SINGLE_METRICS = ("spectra",)
#: the metrics that take interpolation weights
_ALPHA_METRICS = ("llfc", "decomposition")


def feature_product(
    metric: str,
    a: Ref,
    b: Ref,
    *,
    perm: Permutation | Product | None = None,
    split: str = "test",
    n_examples: int | None = 10_000,
    alphas: Sequence[float] = LLFC_ALPHAS,
    builder: Builder,
) -> Product:
    """A layerwise statistic of A and ``perm[B]`` (:mod:`lmccheck.llfc`: ``llfc``, ``weak_additivity``,
    ``commutativity``, ``stitching`` or ``decomposition``, Theorem 1's for ReLU MLPs) on the first
    ``n_examples`` of ``split``, stored as JSON; or ``spectra``, of network A alone (weights and
    post-activations, Zhou et al. Fig. 20-22), where B must be A and ``perm`` None.

    Evaluated in float32 (float64 sums; the decomposition in float64) on the builder's device; ``alphas``
    enter the key of ``llfc`` and ``decomposition`` only.
    """
    if metric not in FEATURE_METRICS:
        raise ValueError(f"unknown feature metric {metric!r}; choose one of {', '.join(FEATURE_METRICS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_examples is not None and n_examples < 1:
        raise ValueError(f"n_examples must be positive (or None for all), got {n_examples}")
    if metric in _SINGLE_METRICS and (perm is not None or (a.product.key, a.at) != (b.product.key, b.at)):
        raise ValueError(f"the feature metric {metric!r} is of one network: pass it as both a and b, without perm")
    config = _same_architecture(f"feature statistic {metric}", a, b)
    params: dict[str, Any] = {"metric": metric, "dataset": config.dataset, "split": split, "n_examples": n_examples,
                              "device_type": torch.device(builder.device).type}
    if metric in _ALPHA_METRICS:
        params["alphas"] = [float(x) for x in alphas]
    return Product("feature_stats", params, {"a": network_ref(a.product, a.at), "b": network_ref(b.product, b.at),
                                             "perm": permutation_input(perm)})


def _build_features(product: Product, builder: Builder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = product.params
    run_a = builder.get(_ref(product, "a").product)
    sa = builder.state(_ref(product, "a"))
    sb = _permuted_state(builder, product, "b", "perm")
    ds = builder.dataset(p["dataset"])
    extra = {"alphas": p["alphas"]} if p["metric"] in _ALPHA_METRICS else {}
    out = FEATURE_METRICS[p["metric"]](_arch_model(builder, run_a.config), sa, sb, ds.split(p["split"]),
                                       n_examples=p["n_examples"], device=builder.device, **extra)
    return {}, {"result": out}


def _decode_features(product: Product, entry: Entry, builder: Builder) -> dict[str, Any]:
    return dict(entry.meta["result"])


# version 2: dist is NaN (undefined) where one feature vector is zero, left out of the mean and counted (version 1
# summed +inf into it); weak additivity records Dist_sigma at alpha = 1/2 as well as the max over alpha
register(Kind("feature_stats", 2, _build_features, _decode_features, phase="evaluation",
              describe=lambda p: f"{p.params['metric']}, {p.params['split']} x {p.params['n_examples']} examples"))
