"""Seed 003 (sparse autoencoders) in ``reproduce``: the SAE study as one part, its claims
and its report section.

The seed's claims are qualitative; each is tested against the baselines its reviewers asked
for (PCA, random directions, frequency-matched random latents, equal-norm random directions,
uniform scaling), by the rule stated in its function.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from whisperlens.report import Section
from whisperlens.studies.reproduce.base import Part, Results, Scale, Study
from whisperlens.studies.reproduce.claims import Claim, Measure, above

SAE_SCALE: dict[str, str] = {"tiny": "tiny", "quick": "quick", "full": "full"}
CLAIMS = {  # seed 003's headline claims (qualitative: the paper reports no numbers)
    "003-monosemantic": "An SAE on Whisper encoder frames uncovers diverse monosemantic "
    "features across linguistic and non-linguistic boundaries.",
    "003-cross-lingual-steering": "SAE features enable cross-lingual feature steering.",
    "003-linguistic": "Whisper's encoder encodes a rich amount of linguistic information.",
}
NOT_WIRED = "studies/reproduce/sae.py: the SAE slot is not wired yet"


def parts(scale: Scale) -> list[Part]:
    from whisperlens.studies.sae.study import SAEStudyConfig, run_sae_study

    config = SAEStudyConfig(Path("sae"), scale=SAE_SCALE[scale], model="tiny.en")  # type: ignore[arg-type]

    def run(path: Path, executor: Any, progress: bool) -> dict[str, Any]:
        return dict(run_sae_study(dataclasses.replace(config, out=path), executor=executor,
                                  progress=progress))  # fmt: skip

    return [Part("sae", dict(config.settings()), run)]


MIN_EFFECT = 0.1  # nats of forced-choice margin: a smaller excess drop is not a causal role
LINGUISTIC = ("phoneme", "word", "language")  # label types about language
NON_LINGUISTIC = ("speech", "position")  # speech vs music/noise/silence; window position


def _summary(results: Results) -> dict[str, Any]:
    return results["sae"].summary


def _diff(comparison: dict[str, Any], name: str, key: str) -> Measure:
    entry = comparison.get(f"sae_minus_{name}") or {}
    ci = entry.get(f"{key}_ci")
    return Measure(f"SAE - {name}, {key.replace('_', ' ')}", entry.get(key),
                   None if ci is None else (ci[0], ci[1]))  # fmt: skip


def _positive(m: Measure) -> bool:
    return m.ci95 is not None and m.ci95[0] is not None and m.ci95[0] > 0


def claim_monosemantic(results: Results) -> Claim:
    """Reproduced if the SAE's fraction of monosemantic latents exceeds PCA's and random
    directions' (bootstrap CI of the difference above 0) and its monosemantic latents span
    a linguistic and a non-linguistic label type; reproduced, explained otherwise if only
    the mean monosemanticity beats the baselines (the SAE's latents are more selective, but
    few pass the strict test) or the types are not diverse."""
    feat = _summary(results).get("features") or {}
    sae = (feat.get("dictionaries") or {}).get("sae") or {}
    comparison = feat.get("comparison") or {}
    counts = sae.get("counts_by_type") or {}
    lo_hi = sae.get("fraction_monosemantic_ci") or [None, None]
    frac = Measure("SAE fraction of alive latents monosemantic", sae.get("fraction_monosemantic"),
                   (lo_hi[0], lo_hi[1]), sae.get("n_alive"))  # fmt: skip
    diffs = [_diff(comparison, b, k) for b in ("pca", "random")
             for k in ("fraction_monosemantic", "mean_monosemanticity")]  # fmt: skip
    types = {t for t, n in counts.items() if n}
    diverse = bool(types & set(LINGUISTIC)) and bool(types & set(NON_LINGUISTIC))
    beats_count = _positive(diffs[0]) and _positive(diffs[2])
    beats_mean = _positive(diffs[1]) and _positive(diffs[3])
    kinds = ", ".join(f"{t} {counts[t]}" for t in sorted(types)) or "none"
    if beats_count and diverse:
        verdict, why = (
            "reproduced",
            (
                f"More SAE latents pass the monosemanticity test than PCA components or random "
                f"directions (CIs of the differences above 0), across label types ({kinds})."
            ),
        )
    elif beats_mean or beats_count:
        verdict, why = (
            "reproduced, explained otherwise",
            (
                f"SAE latents are more label-selective than PCA and random directions on average, "
                f"but the claim of diverse monosemantic features rests on few latents passing a "
                f"strict, chance-corrected test with support rules (types: {kinds}); the seed "
                f"showed examples without a baseline."
            ),
        )
    else:
        verdict, why = (
            "not reproduced",
            (
                f"SAE latents are not more monosemantic than PCA components or random directions "
                f"under the same test (types: {kinds})."
            ),
        )
    return Claim("003-monosemantic", "003", CLAIMS["003-monosemantic"], "qualitative (examples)",
                 (frac, *diffs), verdict, why, "sae")  # type: ignore[arg-type]  # fmt: skip


def claim_cross_lingual(results: Results) -> Claim:
    """Reproduced if steering a SAE language latent raises P(target language) with a CI above
    every control's (random direction of equal norm, top PCA direction, uniform scaling,
    sign flip) at some strength and source language; not reproduced otherwise, or when the
    multilingual SAE has no language latent (the steering then used the mean difference)."""
    steer = _summary(results).get("steer") or {}
    info = steer.get("language_directions") or {}
    entries = steer.get("crosslingual") or []
    measures, wins = [], []
    for (src, tgt, alpha) in dict.fromkeys((e["source"], e["target"], e["strength"])
                                           for e in entries):  # fmt: skip
        group = {e["kind"]: e for e in entries
                 if (e["source"], e["target"], e["strength"]) == (src, tgt, alpha)}  # fmt: skip

        def m(
            kind: str,
            src: str = src,
            tgt: str = tgt,
            alpha: float = alpha,
            group: dict[str, Any] = group,
        ) -> Measure:
            d = (group.get(kind) or {}).get("delta_p_target") or {}
            ci = d.get("ci") or [None, None]
            return Measure(f"{src}->{tgt} x{alpha:g} {kind}: change of P({tgt})", d.get("mean"),
                           (ci[0], ci[1]), d.get("n"))  # fmt: skip

        direction = m("direction")
        controls = [m(k) for k in ("random", "pca", "scale", "sign_flip") if k in group]
        measures += [direction, *controls]
        if controls and all(above(direction, c) for c in controls):
            wins.append(f"{src}->{tgt} at x{alpha:g}")
    from_sae = {lang: v for lang, v in info.items()
                if (v or {}).get("kind") == "sae-latent" and v.get("monosemantic")}  # fmt: skip
    if not entries:
        verdict, why = "not reproduced", "The cross-lingual part did not run."
    elif not from_sae:
        verdict, why = (
            "not reproduced",
            (
                "No latent of the multilingual SAE passes the monosemanticity test with a "
                "language label, so no SAE language feature could be steered (the rows show "
                "the best language-labelled latent, or the mean-difference direction)."
            ),
        )
    elif wins:
        verdict, why = (
            "reproduced",
            (
                f"Adding the SAE language latent moves language identification beyond every "
                f"control ({'; '.join(wins)})."
            ),
        )
    else:
        verdict, why = (
            "not reproduced",
            (
                "Adding the SAE language latent moves language identification no more than a "
                "random direction of equal norm, the top PCA direction or uniform scaling."
            ),
        )
    return Claim("003-cross-lingual-steering", "003", CLAIMS["003-cross-lingual-steering"],
                 "qualitative (examples)", tuple(measures[:8]), verdict, why, "sae")  # type: ignore[arg-type]  # fmt: skip


def claim_linguistic(results: Results) -> Claim:
    """Reproduced if linguistic latents (phoneme, word, language) pass the monosemanticity
    test and ablating at least one of them hurts the words that carry its label more than
    frequency-matched random latents do (CI of the excess above 0, and at least MIN_EFFECT
    nats: with several latents tested, a CI barely above 0 is expected by chance);
    reproduced, explained otherwise if the labels exist without that causal selectivity."""
    summary = _summary(results)
    counts = (((summary.get("features") or {}).get("dictionaries") or {}).get("sae") or {}).get(
        "counts_by_type"
    ) or {}
    n_ling = sum(int(counts.get(t, 0)) for t in LINGUISTIC)
    measures = [Measure("monosemantic linguistic latents", float(n_ling))]
    selective = []
    for a in (summary.get("steer") or {}).get("ablation") or []:
        ex = a.get("excess_margin") or {}
        ci = ex.get("ci") or [None, None]
        m = Measure(f"ablating {a['label']} (latent {a['latent']}): excess margin drop",
                    ex.get("value", ex.get("mean")), (ci[0], ci[1]), a.get("n_with"))  # fmt: skip
        measures.append(m)
        if _positive(m) and (m.value or 0.0) >= MIN_EFFECT:
            selective.append(a["label"])
    if n_ling and selective:
        verdict, why = (
            "reproduced",
            (
                f"{n_ling} latents carry linguistic labels, and ablating {', '.join(selective)} "
                f"hurts the words with that label beyond frequency-matched random latents."
            ),
        )
    elif n_ling:
        verdict, why = (
            "reproduced, explained otherwise",
            (
                f"{n_ling} latents carry linguistic labels, but no tested ablation hurts its "
                f"label's words beyond random latents by {MIN_EFFECT} nats or more: the "
                f"information is there, its causal use at this site is not shown."
            ),
        )
    else:
        verdict, why = "not reproduced", "No latent passes the test with a linguistic label."
    ev = summary.get("evaluate") or {}
    ci = ev.get("ce_loss_recovered_ci95") or [None, None]
    measures.append(Measure("CE loss recovered by the SAE", ev.get("ce_loss_recovered"),
                            (ci[0], ci[1]), ev.get("n_clips")))  # fmt: skip
    return Claim("003-linguistic", "003", CLAIMS["003-linguistic"], "qualitative",
                 tuple(measures), verdict, why, "sae")  # type: ignore[arg-type]  # fmt: skip


def claims(results: Results) -> list[Claim]:
    return [claim_monosemantic(results), claim_cross_lingual(results), claim_linguistic(results)]


def sections(results: Results) -> list[Section]:
    from whisperlens.studies.sae.report import report_section

    result = results["sae"]
    return [report_section(result.summary, result.path, section_id="sae")]


SAE = Study("sae", "003", "Sparse autoencoders", parts, claims, sections)
