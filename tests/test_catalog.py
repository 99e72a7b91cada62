"""lmccheck.catalog: claims once, the ids --lmc-claim accepts, claim checks by name, loading from module:attr."""

from __future__ import annotations

import pytest

from lmccheck.catalog import Catalog, CatalogError, Claim, claim_of_check, load_catalog, parse_ids

TWO = Catalog([Claim("A1", "Another et al.", "§3", "wider is flatter"), Claim("A2", "Another et al.", "§4", "x")])


def test_ids_are_parsed_from_lists_in_any_case_once_each_and_checked_against_the_catalog() -> None:
    assert parse_ids(["a2,A1", "a1", " "], TWO) == ["A2", "A1"]
    with pytest.raises(CatalogError, match=r"unknown claim id 'A3'; the catalog has A1-A2"):
        parse_ids(["A3"], TWO)
    assert parse_ids(["s13"], None) == ["S13"]  # no catalog: any id of letters then digits
    with pytest.raises(CatalogError, match="not a claim id"):
        parse_ids(["13"], None)


def test_a_check_names_its_claim() -> None:
    assert claim_of_check("test_a1_wider_is_flatter", TWO) == "A1"
    assert claim_of_check("test_A2_x", TWO) == "A2"
    assert claim_of_check("test_a3_outside", TWO) is None and claim_of_check("test_a3_outside", None) == "A3"
    assert claim_of_check("test_helper", None) is None and claim_of_check("test_a1only", TWO) is None


def test_a_catalog_holds_each_claim_once_with_a_well_formed_id() -> None:
    assert TWO.ids == ("A1", "A2") and "a1" in TWO and TWO["a2"].section == "§4" and len(TWO) == 2
    with pytest.raises(CatalogError, match="appears twice"):
        Catalog([TWO["A1"], TWO["A1"]])
    for bad in ("a1", "1A", "A", "A-1"):
        with pytest.raises(CatalogError, match="upper-case letters then digits"):
            Claim(bad, "p", "s", "t")
    lmc = load_catalog("claims.catalog:CATALOG")
    assert lmc is not None and len(lmc) == 22 and lmc.describe() == "S1-S12, Z1-Z10"
    assert Catalog([Claim("B2", "p", "s", "t"), Claim("B5", "p", "s", "t")]).describe() == "B2, B5"


@pytest.mark.parametrize(("spec", "message"), [
    ("claims.catalog", "write module:attribute"),
    ("no_such_module_xyz:CATALOG", "cannot import 'no_such_module_xyz'"),
    ("claims.catalog:SHARMA", "is str, not an lmccheck.catalog.Catalog"),
    ("claims.catalog:NOPE", "is missing, not an lmccheck.catalog.Catalog"),
])
def test_a_catalog_that_cannot_be_loaded_says_why(spec: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_catalog(spec)
    assert load_catalog("") is None
