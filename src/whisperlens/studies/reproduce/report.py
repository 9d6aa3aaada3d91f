"""The reproduce report: the claims table first, then each study's sections, one HTML file.

The page is the project's report template (``whisperlens/report/templates``) with the study
sections rendered by :func:`whisperlens.report.section_html` (figures and audio embedded as
``data:`` URIs, so the file works opened from disk with no network). The claims table is
rendered here because its rows link to the evidence, which :class:`~whisperlens.report.Table`
cells (plain text) cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from whisperlens._io import atomic_write_text
from whisperlens.report import Section, Table, paragraphs, section_html
from whisperlens.report.html import REPORT_FILE, TEMPLATES
from whisperlens.studies.reproduce.base import PartResult
from whisperlens.studies.reproduce.claims import Claim

CLAIMS_ID = "claims"
RUN_ID = "run"
VERDICT_COLOURS = {"reproduced": "#d9f2d9", "not reproduced": "#f8d7d7",
                   "reproduced, explained otherwise": "#fff1c2"}  # fmt: skip
CLAIMS_INTRO = (
    "Every headline claim of the three seed studies, our measurement of it (95 % bootstrap "
    "CIs where the number is a sample statistic) and a verdict: **reproduced**, **not "
    "reproduced**, or **reproduced, explained otherwise** (the seed's observation holds, but "
    "a control or the method's mechanics explains it, not the seed's reading). Each verdict "
    "follows a rule stated in `whisperlens/studies/reproduce/`; the last column links to the "
    "evidence. n is the number of rows, clips or cosines behind a number; patching CIs "
    "resample pair directions, steering CIs resample clips."
)


def claims_html(claims: Sequence[Claim], titles: dict[str, str]) -> Markup:
    """The claims section: a table whose rows carry ids and link to their evidence."""
    rows = []
    for c in claims:
        colour = VERDICT_COLOURS[c.verdict]
        measures = "".join(f"<li>{escape(m.text())}</li>" for m in c.measures)
        rows.append(
            f'<tr id="claim-{escape(c.id)}"><td>{escape(c.seed)}</td><td>{escape(c.claim)}</td>'
            f"<td>{escape(c.seed_value)}</td><td><ul>{measures}</ul></td>"
            f'<td style="background:{colour}"><strong>{escape(c.verdict)}</strong><br>'
            f"{escape(c.explanation)}</td>"
            f'<td><a href="#{escape(c.evidence)}">{escape(titles.get(c.evidence, c.evidence))}'
            "</a></td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("seed", "claim", "seed's number", "ours",
                                            "verdict", "evidence"))  # fmt: skip
    return Markup(
        f'<section id="{CLAIMS_ID}"><h2>Claims</h2>{paragraphs(CLAIMS_INTRO)}'
        f'<table class="claims"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></section>"
    )


def run_section(results: Sequence[PartResult], settings: dict[str, Any]) -> Section:
    """Where each part's run directory is and how long it took."""
    rows = [[r.name, f"{r.name}/", r.summary.get("study", ""), round(r.wall_s, 1)]
            for r in results]  # fmt: skip
    total = sum(r.wall_s for r in results)
    intro = (
        f"Scale {settings['scale']!r}. Each study's run directory (with its own "
        "`config.json`, `rows.jsonl`, `summary.json` and `report.html`) is under this one; "
        "re-running the same command resumes. Wall time is that of the run that finished "
        f"each part (a resumed part counts its last stretch only); total {total:.0f} s."
    )
    table = Table(["part", "run directory", "study", "wall s"], rows)
    return Section(RUN_ID, "Run directories and times", intro, [table])


def render(
    title: str, claims: Sequence[Claim], sections: Sequence[Section],
    metadata: dict[str, Any], out_dir: Path,
) -> Path:  # fmt: skip
    """Write ``out_dir/report.html`` atomically (claims first, then ``sections``)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )  # fmt: skip
    env.filters["paragraphs"] = paragraphs
    titles = {s.id: s.title for s in sections}
    rendered = [(Section(CLAIMS_ID, "Claims"), claims_html(claims, titles))]
    rendered += [(s, section_html(s)) for s in sections]
    ids = [s.id for s, _ in rendered]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"duplicate section ids {dupes}")
    missing = sorted({c.evidence for c in claims} - set(ids))
    if missing:
        raise ValueError(f"claims link to sections that do not exist: {missing}")
    html = env.get_template("report.html.j2").render(
        title=title, sections=rendered, metadata=[(k, str(v)) for k, v in metadata.items()]
    )
    path = out_dir / REPORT_FILE
    atomic_write_text(path, html)
    return path
