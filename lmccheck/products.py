"""Products: declared recipes of everything costly a claim uses, and the registry of their kinds.

A :class:`Product` is a small frozen description: its *kind* (``train``,
``spawn``, ``imp_level``, ``retrain``, ``hybrid``, ``matching``, ``barrier``,
``simplex_barrier``, ...), its *params* (JSON values) and its *inputs*, given
as references to other products (:class:`Ref`: a product plus a selector, the
checkpoint time of a network) or as literal values hashed by content
(:class:`Literal`, e.g. a permutation drawn at random by a claim). Its
:attr:`~Product.key` is the hash of that description (through
:func:`lmccheck.recipe_keys.recipe_key`, which adds the kind's code version), so a
whole plan can be keyed without building anything.

Each kind registers, with :func:`register`, how to build it, how to decode its
stored entry, and its code version; the kinds lmccheck ships are registered in
:mod:`lmccheck.kinds`, next to the code that builds them. The builder that makes
products is :class:`lmccheck.builder.Builder`. Imports run one way:
``products`` <- ``kinds`` <- ``builder``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .recipe_keys import CODE_VERSION, recipe_key
from .store import Entry

if TYPE_CHECKING:
    from .builder import Builder

__all__ = ["Kind", "Literal", "Product", "Ref", "TensorsAndMeta", "generic_recipe", "kinds", "register",
           "tensor_digest"]

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
            known = ", ".join(sorted(_KINDS)) or "none (import lmccheck.kinds to register lmccheck's own)"
            raise ValueError(f"unknown product kind {self.kind!r}; registered kinds: {known}")
        # freeze: canonical JSON of the params, evaluated once (also validates JSON-ability)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "_recipe", _KINDS[self.kind].recipe(self))
        object.__setattr__(self, "_key", recipe_key(self.kind, self._recipe))  # type: ignore[attr-defined]

    @property
    def recipe(self) -> dict[str, Any]:
        """What the store hashes: the kind's recipe of params and input references."""
        return self._recipe  # type: ignore[attr-defined]

    @property
    def key(self) -> str:
        """The store key (64 hex digits), computable without building anything."""
        return self._key  # type: ignore[attr-defined]

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
    """The registered kinds by name (lmccheck's own once :mod:`lmccheck.kinds` is imported)."""
    return dict(_KINDS)
