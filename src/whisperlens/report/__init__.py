"""Study reports: matplotlib figures and self-contained HTML pages, checked in a browser.

- :mod:`~whisperlens.report.figures`: :func:`heatmap` (with CI annotations),
  :func:`line_plot` (bands for CIs and controls), :func:`histogram`, :func:`figure_png`.
- :mod:`~whisperlens.report.html`: :class:`Report` of :class:`Section` s holding
  :class:`Figure`, :class:`Table`, :class:`Audio` and :class:`Text` blocks;
  :func:`render_report` writes ``report.html`` (media embedded or under ``assets/``),
  :func:`write_figures` a study's figures as PNG files beside it.
- :mod:`~whisperlens.report.browser`: :func:`check_report_in_browser` (headless Chromium);
  imported from its module, since it needs Playwright.
"""

from __future__ import annotations

from whisperlens.report.figures import Series, figure_png, heatmap, histogram, line_plot
from whisperlens.report.html import (
    Audio,
    Block,
    Figure,
    Report,
    Section,
    Table,
    Text,
    format_cell,
    paragraphs,
    render_report,
    section_html,
    write_figures,
)

__all__ = [
    "Audio",
    "Block",
    "Figure",
    "Report",
    "Section",
    "Series",
    "Table",
    "Text",
    "figure_png",
    "format_cell",
    "heatmap",
    "histogram",
    "line_plot",
    "paragraphs",
    "render_report",
    "section_html",
    "write_figures",
]
