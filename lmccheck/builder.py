"""The builder: a cache over products on one device.

:meth:`Builder.get` builds or loads a product (its inputs first, recursively) through the
:class:`~lmccheck.store.Store`; :meth:`Builder.get_many` builds several missing products with one call (an
ensemble that trains several networks at once); :meth:`Builder.plan` lists what a set of products needs, and
what is already stored, without building anything. Every product handed out is reported to the builder's listeners
as a :class:`ProductEvent` (kind, key, built or loaded, seconds), which is how the claim run attributes time
and keys to the claim that asked. Importing this module registers lmccheck's product kinds
(:mod:`lmccheck.kinds`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from . import kinds as _kinds  # noqa: F401 - registers the built-in kinds
from .data import Dataset, load_dataset
from .products import _KINDS, Input, Kind, Literal, Product, Ref, TensorsAndMeta
from .store import Entry, Store

__all__ = ["Builder", "PlanItem", "ProductEvent"]


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


def _given(record: TensorsAndMeta) -> Callable[[], TensorsAndMeta]:
    """A ``build`` for :meth:`~lmccheck.store.Store.get_or_create` that hands over a record built already."""
    return lambda: record


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
                entry = Entry(product.key, dict(tensors), {**meta, "kind": product.kind, "recipe": product.recipe},
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

    def missing(self, products: Iterable[Product]) -> list[Product]:
        """The products among ``products`` (each once, in order) that :meth:`get` would build: not decoded in
        this session, and not in the store or due for a rebuild (``retrain``)."""
        out: dict[str, Product] = {}
        for p in products:
            if p.key not in out and not self._cached(p)[0] and (
                    (self.retrain and p.key not in self._rebuilt) or not self.stored(p)):
                out[p.key] = p
        return list(out.values())

    def get_many(
        self,
        products: Sequence[Product],
        build_many: Callable[[list[Product]], Sequence[TensorsAndMeta]],
        *,
        note: str = "built together",
    ) -> list[Any]:
        """The decoded ``products``; those :meth:`missing` names are built by one call ``build_many(missing)``.

        ``build_many`` returns one ``(tensors, meta)`` record per product it is given, in order (several
        networks trained as one ensemble). Each record is stored under its own product's key, exactly where
        :meth:`get` looks for it (a product another process stored meanwhile is loaded instead), and reported
        as :meth:`get` reports a product, labelled "(one of N <note>)", with an equal share of the call's
        seconds. The other products are handed out by :meth:`get`.
        """
        missing = self.missing(products)
        built: dict[str, Any] = {}
        if missing:
            for p in missing:
                self._products.setdefault(p.key, p)
                for ref in p.refs():  # inputs first, as get builds them
                    self.get(ref.product)
            for p in missing:
                self._emit_start(p, _KINDS[p.kind])
            t0 = time.perf_counter()
            records = list(build_many(list(missing)))
            share = (time.perf_counter() - t0) / len(missing)
            if len(records) != len(missing):
                raise ValueError(f"build_many returned {len(records)} records for {len(missing)} products")
            for p, (tensors, meta) in zip(missing, records, strict=True):
                kind = _KINDS[p.kind]
                rebuild = self.retrain and p.key not in self._rebuilt
                if kind.stored:
                    entry = self.store.get_or_create(p.kind, p.recipe, _given((tensors, meta)), rebuild=rebuild)
                else:
                    entry = Entry(p.key, dict(tensors), {**meta, "kind": p.kind, "recipe": p.recipe}, built=True)
                self._rebuilt.add(p.key)
                built[p.key] = kind.decode(p, entry, self)
                self._keep(p, kind, built[p.key])
                self._emit(ProductEvent(p.kind, p.key, "built" if entry.built else "loaded",
                                        share if entry.built else entry.seconds,
                                        f"{p.describe()} (one of {len(missing)} {note})", kind.phase,
                                        len(self._child_seconds)))
        return [built[p.key] if p.key in built else self.get(p) for p in products]

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
