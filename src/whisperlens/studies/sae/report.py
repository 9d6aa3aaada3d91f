"""The SAE study's report section: faithfulness against baselines, labelled features with
their audio, ablation selectivity and steering with controls, the seed's claims beside ours."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisperlens.report import Audio, Block, Figure, Report, Section, Series, Table, Text
from whisperlens.runs import RunDir, read_rows

DICTS = ("sae", "pca", "random")


def _ci(value: Any, ci: Sequence[float] | None, fmt: str = "{:.3f}") -> str:
    if value is None:
        return "n/a"
    text = fmt.format(value)
    if ci and all(c is not None for c in ci):
        text += f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return text


def _mean(entry: dict[str, Any] | None, fmt: str = "{:.3f}") -> str:
    if not entry:
        return "n/a"
    value = entry.get("mean", entry.get("value"))
    return _ci(value, entry.get("ci"), fmt)


def corpus_table(extract: dict[str, Any]) -> Table | None:
    frames = extract.get("frames") or {}
    rows = []
    for kind in ("label", "language", "source", "split"):
        for name, n in sorted((frames.get(kind) or {}).items(), key=lambda kv: -kv[1]):
            rows.append([kind, name, n])
    if not rows:
        return None
    total = extract.get("n_frames") or sum(n for k, _, n in rows if k == "label")
    return Table(["by", "value", "frames"], rows,
                 caption=f"Training corpus at the site: {total:,} encoder frames (20 ms each).")  # fmt: skip


def training_figure(train_dir: Path) -> Figure | None:
    from whisperlens.report import line_plot

    rows = (
        read_rows(train_dir / "rows.jsonl", "step") if (train_dir / "rows.jsonl").is_file() else []
    )
    rows = [r for r in rows if r.get("fvu") is not None]
    if len(rows) < 2:
        return None
    steps = [r["step"] for r in rows]
    title = "SAE training: FVU per logged window"
    fig = line_plot(steps, [Series("fraction of variance unexplained", [r["fvu"] for r in rows])],
                    title=title, xlabel="step", ylabel="FVU (training batches)")  # fmt: skip
    return Figure.from_matplotlib(title, fig)


def evaluation_table(ev: dict[str, Any]) -> Table:
    rows = []
    for name in DICTS:
        d = ev.get(name) or {}
        rows.append([
            name, d.get("k") if name != "sae" else "-", _ci(d.get("fvu"), d.get("fvu_ci95")),
            _ci(d.get("l0"), None, "{:.1f}"), _ci(d.get("dead_fraction"), None),
            _ci(d.get("dense_fraction"), None),
            _ci(d.get("ce_loss_recovered"), d.get("ce_loss_recovered_ci95")),
            _ci(d.get("ce_loss_recovered_mean"), d.get("ce_loss_recovered_mean_ci95")),
            _ci(d.get("wer_spliced"), d.get("wer_spliced_ci95")),
        ])  # fmt: skip
    return Table(
        ["dictionary", "k", "FVU", "L0", "dead", "dense", "CE recovered (zero abl.)",
         "CE recovered (mean abl.)", "WER spliced"], rows,
        caption=f"Held-out frames ({ev.get('n_heldout_frames')}) and {ev.get('n_clips')} held-out "
        "clips with transcripts; the site's real-audio frames are replaced by each dictionary's "
        "reconstruction. PCA keeps as many components as the SAE's mean L0; random directions "
        "have the SAE's size and TopK. 95 % bootstrap CIs over frames' items / clips.",
    )  # fmt: skip


def ablation_baselines_table(ev: dict[str, Any]) -> Table | None:
    abl = ev.get("ablations") or {}
    rows = [[name, _ci(a.get("wer"), a.get("wer_ci95")), _ci(a.get("cer"), a.get("cer_ci95")),
             _ci(a.get("ce"), a.get("ce_ci95"))]
            for name, a in abl.items() if a]  # fmt: skip
    if not rows:
        return None
    return Table(["site replaced by", "WER", "CER", "CE (nats/token)"], rows,
                 caption="Reference points: clean (nothing replaced), zero and mean ablation of "
                 "the site's real-audio frames.")  # fmt: skip


def monosemanticity_table(feat: dict[str, Any]) -> Table | None:
    per = feat.get("dictionaries") or {n: feat.get(n) for n in DICTS if feat.get(n)}
    if not per:
        return None
    types = sorted({t for d in per.values() if d for t in (d.get("counts_by_type") or {})})
    rows = []
    for name in DICTS:
        d = per.get(name)
        if not d:
            continue
        counts = d.get("counts_by_type") or {}
        rows.append([name, d.get("n_latents"), d.get("n_alive"), d.get("n_monosemantic"),
                     _ci(d.get("fraction_monosemantic"), d.get("fraction_monosemantic_ci")),
                     _ci(d.get("mean_monosemanticity"), d.get("mean_monosemanticity_ci")),
                     *[counts.get(t, 0) for t in types]])  # fmt: skip
    return Table(["dictionary", "latents", "alive", "monosemantic", "fraction monosemantic",
                  "mean monosemanticity", *[f"# {t}" for t in types]], rows,
                 caption="Same analysis for every dictionary: chance-corrected label purity of "
                 "each latent's activation mass, counted when its 95 % lower bound is at least "
                 "the threshold with enough support (see docs/sae.md). PCA components are split "
                 "into their positive and negative halves.")  # fmt: skip


def top_latents(features_dir: Path, n: int = 8) -> list[Block]:
    path = features_dir / "latents.json"
    if not path.is_file():
        return []
    latents = json.loads(path.read_text(encoding="utf-8"))
    ranked = sorted((r for r in latents if r.get("monosemantic")),
                    key=lambda r: -(r.get("monosemanticity_lo") or 0))  # fmt: skip
    picked: list[dict[str, Any]] = []
    seen_types: dict[str, int] = {}
    for r in ranked:  # a mix of label types, best first
        t = str(r.get("label_type"))
        if seen_types.get(t, 0) < max(2, n // 4):
            picked.append(r)
            seen_types[t] = seen_types.get(t, 0) + 1
        if len(picked) == n:
            break
    if not picked:
        return [Text("No latent passed the monosemanticity threshold on the analysed frames.")]
    rows = [[r["latent"], r.get("label"), _ci(r.get("monosemanticity"), None),
             _ci(r.get("monosemanticity_lo"), None), f"{r.get('frequency', 0):.4f}"]
            for r in picked]  # fmt: skip
    blocks: list[Block] = [Table(["latent", "label", "monosemanticity", "lower bound", "frequency"],
                                 rows, caption="The most confidently labelled latents (a mix "
                                 "of label types); their top example below.")]  # fmt: skip
    for r in picked:
        top = (r.get("top") or [None])[0]
        if top and (features_dir / top["audio"]).is_file():
            where = top.get("word") or top.get("phoneme") or top.get("label") or ""
            blocks.append(Audio(f"latent {r['latent']} ({r.get('label')})",
                                features_dir / top["audio"],
                                caption=f"{top['item']} at {top['time_s']:.2f} s ({where}), "
                                f"activation {top['activation']:.2f}"))  # fmt: skip
    return blocks


def ablation_table(steer: dict[str, Any]) -> Table | None:
    rows = []
    for a in steer.get("ablation") or []:
        ctrl = a.get("control_margin") or []
        rows.append([a["latent"], a["label"], a.get("n_with"), a.get("n_without"),
                     _mean(a.get("margin")), _mean(a.get("accuracy")),
                     ", ".join(f"{c:.3f}" for c in ctrl if c is not None) or "n/a",
                     _mean(a.get("excess_margin"))])  # fmt: skip
    if not rows:
        return None
    return Table(["latent", "label", "clips with", "clips without", "selectivity (margin)",
                  "selectivity (accuracy)", "random latents, same frequency",
                  "excess over controls"], rows,
                 caption="Zeroing one latent in the spliced code (reconstruction error kept) on "
                 "the word's frames of held-out minimal-pair words: selectivity = mean drop of "
                 "the forced-choice log-prob margin on words with the label minus without; 95 % "
                 "bootstrap CIs over clips.")  # fmt: skip


def steering_table(steer: dict[str, Any]) -> Table | None:
    rows = [[s["latent"], s["label"], s["kind"], s["strength"], _mean(s.get("changed")),
             _mean(s.get("wer_clean"))] for s in steer.get("steering") or []]  # fmt: skip
    if not rows:
        return None
    return Table(["latent", "label", "condition", "strength", "transcripts changed",
                  "WER vs clean"], rows,
                 caption="Adding the latent's decoder direction (strength x its max activation) "
                 "on every audio frame, beside the sign flip, a random direction of equal norm, "
                 "the top PCA direction, uniform scaling of the activation and clamping.")  # fmt: skip


def crosslingual_blocks(steer: dict[str, Any]) -> list[Block]:
    from whisperlens.report import line_plot

    entries = steer.get("crosslingual") or []
    if not entries:
        return []
    rows = [[e["source"], e["target"], e["kind"], e["strength"], _mean(e.get("delta_p_target")),
             _mean(e.get("output_in_target")), _mean(e.get("output_in_target_clean"))]
            for e in entries]  # fmt: skip
    blocks: list[Block] = [Table(["clips in", "steered toward", "condition", "strength",
                                  "change of P(target language)", "output in target language",
                                  "clean: output in target"], rows,
                                 caption="Language steering on held-out natural speech, with "
                                 "controls at the same strengths.")]  # fmt: skip
    for src in sorted({e["source"] for e in entries}):
        mine = [e for e in entries if e["source"] == src]
        xs = sorted({e["strength"] for e in mine})
        series = []
        for kind in dict.fromkeys(e["kind"] for e in mine):
            by_x = {e["strength"]: e.get("delta_p_target") or {} for e in mine if e["kind"] == kind}
            vals = [by_x.get(x, {}) for x in xs]
            ci = [v.get("ci") or [None, None] for v in vals]
            series.append(Series(kind, [v.get("mean", float("nan")) for v in vals],
                                 [c[0] if c[0] is not None else float("nan") for c in ci],
                                 [c[1] if c[1] is not None else float("nan") for c in ci],
                                 kind="effect" if kind in ("direction", "latent") else "control"))  # fmt: skip
        tgt = mine[0]["target"]
        title = f"{src} clips steered toward {tgt}"
        fig = line_plot(xs, series, title=title, xlabel="strength",
                        ylabel=f"change of P({tgt})", hline=0.0)  # fmt: skip
        blocks.append(Figure.from_matplotlib(title, fig))
    return blocks


def report_section(summary: dict[str, Any], run_dir: Path, section_id: str = "sae") -> Section:
    """The study's section from its summary and run directory."""
    ev, feat, steer = (
        summary.get("evaluate") or {},
        summary.get("features") or {},
        summary.get("steer") or {},
    )
    extract, train = summary.get("extract") or {}, summary.get("train") or {}
    sae = ev.get("sae") or {}
    cfg = summary.get("config") or {}
    intro = (
        f"Question (seed 003): does a sparse autoencoder on Whisper encoder frames find "
        f"monosemantic features, and do they act causally on the transcript? Method: "
        f"{cfg.get('model')} activations at {summary.get('site')} over an offline corpus of "
        f"natural, synthetic and non-speech audio; a {cfg.get('architecture')} SAE "
        f"({train.get('d_sae', '?')} latents, k = {cfg.get('k')}) trained with SAELens; "
        f"faithfulness on held-out audio against PCA and random directions; latents labelled by "
        f"chance-corrected purity; ablation and steering with controls. Headline: FVU "
        f"{_ci(sae.get('fvu'), sae.get('fvu_ci95'))}, CE loss recovered "
        f"{_ci(sae.get('ce_loss_recovered'), sae.get('ce_loss_recovered_ci95'))}."
    )
    blocks: list[Block] = []
    for block in (corpus_table(extract), training_figure(run_dir / "train")):
        if block is not None:
            blocks.append(block)
    if ev:
        blocks.append(evaluation_table(ev))
        if (t := ablation_baselines_table(ev)) is not None:
            blocks.append(t)
    if (t := monosemanticity_table(feat)) is not None:
        blocks.append(t)
    blocks += top_latents(run_dir / "features")
    for block in (ablation_table(steer), steering_table(steer)):
        if block is not None:
            blocks.append(block)
    blocks += crosslingual_blocks(steer)
    if (run_dir / "dashboard" / "index.html").is_file():
        blocks.append(Text("Every latent, with its top examples to listen to and their "
                           "spectrograms: dashboard/index.html in the run directory."))  # fmt: skip
    return Section(section_id, "Sparse autoencoders (seed 003)", intro, blocks)


def write_report(run: RunDir, summary: dict[str, Any]) -> None:
    from whisperlens.report import render_report

    section = report_section(summary, run.path)
    render_report(Report("whisperlens sparse autoencoder study", [section], summary["config"]),
                  run.path)  # fmt: skip
