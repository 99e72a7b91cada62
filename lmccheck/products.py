"""Products: declared recipes of everything costly a claim uses, and the builder that makes them.

A :class:`Product` is a small frozen description: its *kind* (``train``,
``spawn``, ``imp_level``, ``retrain``, ``hybrid``, ``matching``, ``barrier``,
``simplex_barrier``, ...), its *params* (JSON values) and its *inputs*, given
as references to other products (:class:`Ref`: a product plus a selector, the
checkpoint time of a network) or as literal values hashed by content
(:class:`Literal`, e.g. a permutation drawn at random by a claim). Its
:attr:`~Product.key` is the hash of that description (through
:func:`lmccheck.store.recipe_key`, which adds the kind's code version), so a
whole plan can be keyed without building anything.

Each kind registers, with :func:`register`, how to build it, how to decode its
stored entry, and its code version; the kinds lmccheck ships are registered in
:mod:`lmccheck.kinds`, next to the code that builds them.

A :class:`Builder` is a cache over products on one device: :meth:`Builder.get`
builds or loads a product (its inputs first, recursively) through the
:class:`~lmccheck.store.Store`, and :meth:`Builder.plan` lists what a set of
products needs, and what is already stored, without building anything. Every
product handed out is reported to the builder's listeners as a
:class:`ProductEvent` (kind, key, built or loaded, seconds), which is how the
claim run attributes time and keys to the claim that asked.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from .data import Dataset, load_dataset
from .store import CODE_VERSION, Entry, Store, recipe_key

__all__ = [
    "Builder",
    "Kind",
    "Literal",
    "PlanItem",
    "Product",
    "ProductEvent",
    "Ref",
    "kinds",
    "register",
    "tensor_digest",
]

TensorsAndMeta = tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]


# --------------------------------------------------------------------------- descriptions
def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """A content hash of named tensors (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Literal:
    """An input given by value (a permutation, a mask), identified by its content digest."""

    value: Any
    digest: str

    def recipe(self) -> dict[str, Any]:
        return {"literal": self.digest}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@dataclass(frozen=True, eq=False)
class Ref:
    """A product used as an input, with a selector: ``at`` is a checkpoint time in epochs (None: the end)."""

    product: Product
    at: float | None = None

    def __post_init__(self) -> None:
        if self.at is not None:
            object.__setattr__(self, "at", float(self.at))

    def recipe(self) -> dict[str, Any]:
        return {"key": self.product.key, "at": self.at}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.product.key == self.product.key and other.at == self.at

    def __hash__(self) -> int:
        return hash((self.product.key, self.at))


Input = Ref | Literal | None | tuple[Any, ...]


def _input_recipe(value: Input, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, (Ref, Literal)):
        return value.recipe()
    if isinstance(value, tuple):
        return [_input_recipe(v, where) for v in value]
    raise TypeError(f"input {where!r} must be a Ref, a Literal, None or a tuple of them, got {type(value).__name__}")


def _iter_refs(value: Input) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _iter_refs(v)


@dataclass(frozen=True, eq=False)
class Product:
    """A declared product: ``kind``, JSON ``params`` and named ``inputs``; keyed by their hash.

    Two products are equal when their keys are equal. Build one with the
    constructors of :mod:`lmccheck.kinds` (``train_product``, ``barrier_product``, ...).
    """

    kind: str
    params: Mapping[str, Any]
    inputs: Mapping[str, Input] = field(default_factory=dict)
    label: str = ""
    hints: Any = None
    """How to build it faster (e.g. a barrier's speed options); never part of the key."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            _ensure_kinds()
        if self.kind not in _KINDS:
            raise ValueError(f"unknown product kind {self.kind!r}; registered kinds: {', '.join(sorted(_KINDS))}")
        # freeze: canonical JSON of the params, evaluated once (also validates JSON-ability)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "_recipe", _KINDS[self.kind].recipe(self))
        object.__setattr__(self, "_key", recipe_key(self.kind, self._recipe))  # type: ignore[attr-defined]

    @property
    def recipe(self) -> dict[str, Any]:
        """What the store hashes: the kind's recipe of params and input references."""
        return self._recipe  # type: ignore[attr-defined,no-any-return]

    @property
    def key(self) -> str:
        """The store key (64 hex digits), computable without building anything."""
        return self._key  # type: ignore[attr-defined,no-any-return]

    @property
    def short(self) -> str:
        return self.key[:12]

    def refs(self) -> list[Ref]:
        """The product inputs (literals excluded), in declaration order."""
        return [r for v in self.inputs.values() for r in _iter_refs(v)]

    def describe(self) -> str:
        """One line: kind, label and short key."""
        return f"{self.kind} {self.label or _KINDS[self.kind].describe(self)} [{self.short}]".replace("  ", " ")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Product) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Product({self.kind!r}, {self.short})"


def generic_recipe(product: Product) -> dict[str, Any]:
    """``{"params": ..., "inputs": {name: {"key", "at"} | {"literal"} | None}}``."""
    return {
        "params": product.params,
        "inputs": {name: _input_recipe(v, name) for name, v in sorted(product.inputs.items())},
    }


# --------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class Kind:
    """How to build and decode one kind of product.

    ``build(product, builder)`` returns ``(tensors, meta)`` for the store;
    ``decode(product, entry, builder)`` turns a stored entry into the object
    handed out. ``recipe(product)`` is what the key hashes (default
    :func:`generic_recipe`). ``network`` kinds decode to large objects (runs
    with their checkpoints) and are kept in a bounded cache. ``phase`` names
    the kind of work, for time accounting (training, matching, evaluation).
    """

    name: str
    version: int
    build: Callable[[Product, Builder], TensorsAndMeta]
    decode: Callable[[Product, Entry, Builder], Any]
    recipe: Callable[[Product], dict[str, Any]] = generic_recipe
    describe: Callable[[Product], str] = lambda p: ""
    network: bool = False
    phase: str = "other"
    stored: bool = True
    """False for products cheaper to derive from their inputs than to store (a hybrid state):
    built on demand, kept in memory for the session, never written to the store."""


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Register ``kind`` (its code version becomes part of every key of that kind)."""
    _KINDS[kind.name] = kind
    CODE_VERSION[kind.name] = kind.version
    return kind


def kinds() -> dict[str, Kind]:
    """The registered kinds by name."""
    _ensure_kinds()
    return dict(_KINDS)


def _ensure_kinds() -> None:
    from . import kinds as _  # noqa: F401 - registers the built-in kinds


# --------------------------------------------------------------------------- events and plans
@dataclass(frozen=True)
class ProductEvent:
    """A product handed out by a :class:`Builder`.

    ``source`` is ``built`` (built in this call), ``loaded`` (read from the
    store), ``memo`` (already decoded in this session) or ``input`` (an input
    of a loaded product, named but not fetched). ``seconds`` is the time spent
    on this product alone, its inputs' builds excluded. Start listeners get
    ``start`` (this process builds it now) or ``waiting`` (another process
    holds its lock and builds it; this one waits and loads it).
    """

    kind: str
    key: str
    source: str
    seconds: float
    label: str
    phase: str
    depth: int

    @property
    def built(self) -> bool:
        return self.source == "built"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "source": self.source,
            "seconds": round(self.seconds, 4),
            "label": self.label,
            "phase": self.phase,
        }


@dataclass(frozen=True)
class PlanItem:
    """One line of a plan: a product, its key, and whether the store already holds it."""

    kind: str
    key: str
    stored: bool
    label: str


Listener = Callable[[ProductEvent], None]


# --------------------------------------------------------------------------- builder
@dataclass
class Builder:
    """Builds or loads products on ``device`` through ``store``; a thin cache over them.

    ``retrain`` rebuilds each product once per session. Decoded network
    products (runs with their checkpoints) are kept in a least-recently-used
    cache of ``max_networks`` entries; measurements are small and kept for the
    session. Datasets are loaded once per device.
    """

    store: Store
    device: str = "cpu"
    data_root: Path | None = None
    download: bool = False
    retrain: bool = False
    progress: bool | TextIO | None = None
    """Training bars: None (when stderr is a terminal), True, False, or a stream to draw them on."""
    max_networks: int = 8
    listeners: list[Listener] = field(default_factory=list)
    start_listeners: list[Listener] = field(default_factory=list)
    _networks: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    _memo: dict[str, Any] = field(default_factory=dict)
    _rebuilt: set[str] = field(default_factory=set)
    _datasets: dict[str, Dataset] = field(default_factory=dict)
    _child_seconds: list[float] = field(default_factory=list)
    _facts: dict[str, Any] = field(default_factory=dict)
    _products: dict[str, Product] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _ensure_kinds()

    # -- data -----------------------------------------------------------------
    def dataset(self, name: str) -> Dataset:
        """A dataset resident on the builder's device, loaded (and copied there) once."""
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, root=self.data_root, download=self.download, device=self.device)
        return self._datasets[name]

    def fact(self, name: str, compute: Callable[[], Any]) -> Any:
        """A small value computed once per session under ``name`` (e.g. whether an architecture has BatchNorm)."""
        if name not in self._facts:
            self._facts[name] = compute()
        return self._facts[name]

    # -- events ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every product handed out; returns a function that unsubscribes."""
        self.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)

        return unsubscribe

    def subscribe_starts(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` when a product is about to be built (``source="start"``, after its inputs are
        ready): for progress lines. Returns a function that unsubscribes."""
        self.start_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.start_listeners:
                self.start_listeners.remove(listener)

        return unsubscribe

    def _emit(self, event: ProductEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _emit_start(self, product: Product, kind: Kind, source: str = "start") -> None:
        """Tell the start listeners that ``product`` is being built (``start``), or that another process is
        building it and this one waits for it (``waiting``)."""
        event = ProductEvent(product.kind, product.key, source, 0.0, product.describe(), kind.phase,
                             len(self._child_seconds) - 1)
        for listener in list(self.start_listeners):
            listener(event)

    # -- products -------------------------------------------------------------
    def _cached(self, product: Product) -> tuple[bool, Any]:
        if product.key in self._memo:
            return True, self._memo[product.key]
        if product.key in self._networks:
            self._networks.move_to_end(product.key)
            return True, self._networks[product.key]
        return False, None

    def _keep(self, product: Product, kind: Kind, obj: Any) -> None:
        if kind.network:
            self._networks[product.key] = obj
            self._networks.move_to_end(product.key)
            while len(self._networks) > max(1, self.max_networks):
                self._networks.popitem(last=False)
        else:
            self._memo[product.key] = obj

    def get(self, product: Product) -> Any:
        """The decoded product, built (inputs first) or loaded from the store."""
        kind = _KINDS[product.kind]
        self._products.setdefault(product.key, product)
        hit, obj = self._cached(product)
        if hit:
            self._emit(ProductEvent(product.kind, product.key, "memo", 0.0, product.describe(), kind.phase,
                                    len(self._child_seconds)))
            return obj
        rebuild = self.retrain and product.key not in self._rebuilt

        def build() -> TensorsAndMeta:  # under the key's lock: this process builds it
            self._emit_start(product, kind)
            return kind.build(product, self)

        t0 = time.perf_counter()
        self._child_seconds.append(0.0)
        try:
            if rebuild or not self.stored(product):
                # inputs first, outside this product's store lock: its build time is its own
                for ref in product.refs():
                    self.get(ref.product)
            if kind.stored:
                entry = self.store.get_or_create(product.kind, product.recipe, build, rebuild=rebuild,
                                                 on_wait=lambda: self._emit_start(product, kind, "waiting"))
            else:
                tensors, meta = build()
                entry = Entry(product.key, tensors, {**meta, "kind": product.kind, "recipe": product.recipe},
                              built=True)
            self._rebuilt.add(product.key)
            obj = kind.decode(product, entry, self)
        finally:
            nested = self._child_seconds.pop()
        total = time.perf_counter() - t0
        if self._child_seconds:
            self._child_seconds[-1] += total
        self._keep(product, kind, obj)
        source = "built" if entry.built else "loaded"
        depth = len(self._child_seconds)
        self._emit(ProductEvent(product.kind, product.key, source, max(0.0, total - nested), product.describe(),
                                kind.phase, depth))
        if not entry.built:
            self._emit_inputs(product, depth + 1, set())
        return obj

    def _emit_inputs(self, product: Product, depth: int, seen: set[str]) -> None:
        """Name the inputs of a product that was loaded (``source="input"``), so a record lists the
        same keys whether its products were built or loaded."""
        for ref in product.refs():
            p = ref.product
            if p.key in seen:
                continue
            seen.add(p.key)
            self._emit(ProductEvent(p.kind, p.key, "input", 0.0, p.describe(), _KINDS[p.kind].phase, depth))
            self._emit_inputs(p, depth + 1, seen)

    def product(self, key: str) -> Product:
        """The product with store key ``key`` that this builder handed out (``KeyError`` otherwise)."""
        try:
            return self._products[key]
        except KeyError:
            raise KeyError(f"no product with key {key[:12]} was handed out by this builder") from None

    def state(self, ref: Ref) -> dict[str, torch.Tensor]:
        """The state dict a network reference selects (``ref.at``; the end when None)."""
        run = self.get(ref.product)
        t = run.times[-1] if ref.at is None else ref.at
        return run.state_at(t)

    def resolve(self, value: Input) -> Any:
        """An input's value: a Ref's product, a Literal's value, None, or a tuple of those."""
        if value is None:
            return None
        if isinstance(value, Literal):
            return value.value
        if isinstance(value, Ref):
            return self.get(value.product)
        return tuple(self.resolve(v) for v in value)

    def stored(self, product: Product) -> bool:
        """Whether the store holds ``product`` (cheap: no verification, no build); False for unstored kinds."""
        return _KINDS[product.kind].stored and self.store.contains(product.key)

    def plan(self, products: Iterable[Product]) -> list[PlanItem]:
        """Every product needed for ``products``, inputs first, and whether each is stored.

        Builds and loads nothing. The inputs of a stored product are not listed
        (they are not needed), unless another product needs them.
        """
        out: dict[str, PlanItem] = {}

        def visit(p: Product) -> None:
            if p.key in out:
                return
            stored = self.stored(p)
            if not stored:
                for r in p.refs():
                    visit(r.product)
            out[p.key] = PlanItem(p.kind, p.key, stored, p.describe())

        for p in products:
            visit(p)
        return list(out.values())

