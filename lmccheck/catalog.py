"""A claims catalog: the claims a project checks, each with its paper, section and statement, once.

The pytest plugin takes the catalog from the project that uses it, through the ini option ``lmc_catalog =
module:attribute`` (lmccheck's own is ``claims.catalog:CATALOG``, Sharma et al.'s S1-S12 and Zhou et al.'s
Z1-Z10), so another paper's claims plug in without editing lmccheck. The catalog decides which ids
``--lmc-claim`` accepts, and which check functions are claim checks when only their node ids are known (the
pytest-xdist controller): a check of claim ``X7`` is named ``test_x7_...``. Without a catalog any id of letters
then digits is accepted.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Catalog", "Claim", "CatalogError", "load_catalog"]

#: a claim id: letters, then digits (``S3``, ``Z10``)
ID_PATTERN = re.compile(r"[A-Za-z]+[0-9]+")
#: a claim check's function name: ``test_<claim id>_...`` (the id in any case)
_CHECK_NAME = re.compile(r"test_([A-Za-z]+[0-9]+)_")


class CatalogError(ValueError):
    """A catalog that cannot be loaded or is malformed, or an id outside it."""


@dataclass(frozen=True)
class Claim:
    """One claim: its id, the paper and section it comes from, and what it states (a few words)."""

    id: str
    paper: str
    section: str
    statement: str
    tiers: tuple[str, ...] = ("CPU", "GPU")
    """Where it is checked: ``CPU`` (the default run), ``GPU`` (``-m gpu``)."""

    def __post_init__(self) -> None:
        if not ID_PATTERN.fullmatch(self.id) or self.id != self.id.upper():
            raise CatalogError(f"claim id {self.id!r}: use upper-case letters then digits, e.g. 'S3'")


class Catalog:
    """An ordered set of claims, by id."""

    def __init__(self, claims: Iterable[Claim]) -> None:
        self._claims: dict[str, Claim] = {}
        for c in claims:
            if c.id in self._claims:
                raise CatalogError(f"claim id {c.id} appears twice in the catalog")
            self._claims[c.id] = c

    def __iter__(self) -> Iterator[Claim]:
        return iter(self._claims.values())

    def __len__(self) -> int:
        return len(self._claims)

    def __contains__(self, claim_id: object) -> bool:
        return isinstance(claim_id, str) and claim_id.upper() in self._claims

    def __getitem__(self, claim_id: str) -> Claim:
        return self._claims[claim_id.upper()]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._claims)

    def describe(self) -> str:
        """The ids in a few words, for error messages (``S1-S12, Z1-Z10``)."""
        numbers: dict[str, list[int]] = {}  # per letter prefix, in the catalog's order
        for cid in self.ids:  # letters, then digits (Claim checks its id)
            prefix = cid.rstrip(string.digits)
            numbers.setdefault(prefix, []).append(int(cid[len(prefix):]))
        runs = []
        for prefix, nums in numbers.items():
            contiguous = len(nums) > 1 and sorted(nums) == list(range(min(nums), max(nums) + 1))
            runs.append(f"{prefix}{min(nums)}-{prefix}{max(nums)}" if contiguous
                        else ", ".join(f"{prefix}{n}" for n in nums))
        return ", ".join(runs)


def parse_ids(values: Sequence[str], catalog: Catalog | None) -> list[str]:
    """``["S2,S5", "z1"]`` -> ``["S2", "S5", "Z1"]`` (upper case, first occurrence kept); a
    :class:`CatalogError` names an id that is malformed or, with a catalog, outside it."""
    ids: list[str] = []
    for value in values:
        for part in value.replace(" ", ",").split(","):
            if not part:
                continue
            cid = part.strip().upper()
            if not ID_PATTERN.fullmatch(cid):
                raise CatalogError(f"{part!r} is not a claim id (letters then digits, e.g. S2)")
            if catalog is not None and cid not in catalog:
                raise CatalogError(f"unknown claim id {part!r}; the catalog has {catalog.describe()}")
            if cid not in ids:
                ids.append(cid)
    return ids


def claim_of_check(function_name: str, catalog: Catalog | None) -> str | None:
    """The claim id a check function's name ``test_<id>_...`` names (upper case), or None: no such name, or an
    id outside the catalog."""
    m = _CHECK_NAME.match(function_name)
    if m is None:
        return None
    cid = m.group(1).upper()
    return cid if catalog is None or cid in catalog else None


def load_catalog(spec: str) -> Catalog | None:
    """The catalog ``module:attribute`` names (None for an empty spec); a :class:`CatalogError` says what is
    wrong and how to fix it."""
    spec = spec.strip()
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CatalogError(f"lmc_catalog = {spec!r}: write module:attribute, e.g. claims.catalog:CATALOG")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CatalogError(f"lmc_catalog = {spec!r}: cannot import {module_name!r} ({exc}); run pytest from the "
                           "project root, or fix the ini option") from None
    value = getattr(module, attr, None)
    if not isinstance(value, Catalog):
        raise CatalogError(f"lmc_catalog = {spec!r}: {module_name}.{attr} is "
                           f"{'missing' if value is None else type(value).__name__}, not an lmccheck.catalog.Catalog")
    return value
