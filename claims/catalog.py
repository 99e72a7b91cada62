"""lmccheck's claims catalog: Sharma et al. 2024 (S1-S12) and Zhou et al. 2023 (Z1-Z10), each once.

The pytest plugin reads it through ``lmc_catalog = claims.catalog:CATALOG`` (pyproject.toml); the README's
claims index is generated from it (``python tools/readme_index.py``). Each check quotes its claim's
sentence where it asserts it; the statement here is the index's few words.
"""

from __future__ import annotations

from lmccheck.catalog import Catalog, Claim

SHARMA = "Sharma et al. 2024"
ZHOU = "Zhou et al. 2023"

CATALOG = Catalog([
    Claim("S1", SHARMA, "§2.2, App. A", "permuting hidden units leaves the function unchanged", tiers=("CPU",)),
    Claim("S2", SHARMA, "§4, App. B",
          "barriers are invariant under joint permutation, so a witness of SLC gives one of WLC; F0 = {θ, P[θ]}"
          " has SLC but is not linearly connected"),
    Claim("S3", SHARMA, "§5.1, Fig. 1", "P_end aligns the whole SGD trajectory"),
    Claim("S4", SHARMA, "§5.1, Fig. 1, 8", "P_end aligns children spawned after the onset of LMC"),
    Claim("S5", SHARMA, "§5.2, Fig. 2, 11–12",
          "the dense permutation aligns every IMP level better than matching the sparse networks directly"),
    Claim("S6", SHARMA, "§5.2, App. F, Fig. 2, 13", "IMP masks transport modulo permutation"),
    Claim("S7", SHARMA, "§5.3, App. G, Fig. 3, 14",
          "indirect alignment through a third network: its barrier falls with width and is much higher than "
          "direct alignment's"),
    Claim("S8", SHARMA, "§6, App. E, H.1, Fig. 4",
          "weight matching fails early; activation matching finds a usable permutation earlier"),
    Claim("S9", SHARMA, "App. H.2, Fig. 5, 16", "weight matching relies on large weights"),
    Claim("S10", SHARMA, "App. H.3, Fig. 5, 17–18", "weight matching aligns lower layers earlier"),
    Claim("S11", SHARMA, "App. H.4, Fig. 6, 19–20",
          "stability at initialization is neither necessary nor sufficient for alignment", tiers=("GPU",)),
    Claim("S12", SHARMA, "App. H.4, Fig. 21; App. G, Fig. 14",
          "P_t and P_end share more fixed points as t grows, early layers most; direct and indirect "
          "permutations are not similar"),
    Claim("Z1", ZHOU, "§4, Fig. 2–3", "LLFC co-occurs with LMC"),
    Claim("Z2", ZHOU, "Fig. 4", "at α = 0.5, LMC pairs are LLFC and independent pairs are not"),
    Claim("Z3", ZHOU, "App. B.2, §5.1", "the LLFC scale coef_α is close to 1 \"in most cases\""),
    Claim("Z4", ZHOU, "Lemma 1",
          "LLFC on the output and errors ≤ ε ⇒ interpolated error ≤ 2ε (generated cases, exact)", tiers=("CPU",)),
    Claim("Z5", ZHOU, "Theorem 1",
          "weak additivity + commutativity ⇒ LLFC with c = 1 (generated ReLU MLPs)", tiers=("CPU",)),
    Claim("Z6", ZHOU, "§5.1, Fig. 5–6", "weak additivity"),
    Claim("Z7", ZHOU, "§5.1, Fig. 7, 16–19", "commutativity"),
    Claim("Z8", ZHOU, "App. B.4", "stitching B_{>ℓ} ∘ A_{≤ℓ} without a stitching layer"),
    Claim("Z9", ZHOU, "App. B.5, Fig. 22",
          "the stable rank at the end of training is \"significantly smaller\" than after 1 epoch"),
    Claim("Z10", ZHOU, "§5.2", "matching establishes commutativity"),
])
