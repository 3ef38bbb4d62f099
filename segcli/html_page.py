"""One HTML page that opens from its folder with no network and no server: the reports' common form.

A `Page` is a title, headline numbers and sections of paragraphs, tables and pictures; `write` puts it in one
file with its style inline (no scripts, no web fonts, no CDN). Pictures are PNG files beside the page, named by
relative path, so the folder can be zipped, mailed or served as it is. `ReportFolder` is that folder: it refuses
a folder holding someone else's files, and replaces a report it wrote before.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from segcli import io
from segcli.errors import SegcliError, UsageError

MANIFEST = "report.json"  # what a report folder holds: its files, so a rerun can replace exactly those

STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #dfe3ea; --panel: #f6f7f9; --accent: #2c6bd6; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
header { padding: 28px 40px 18px; border-bottom: 1px solid var(--line); background: var(--panel); }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 0; color: var(--muted); }
nav { padding: 10px 40px; border-bottom: 1px solid var(--line); font-size: 14px; position: sticky; top: 0;
      background: rgba(255, 255, 255, 0.96); z-index: 1; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; white-space: nowrap; }
main { padding: 8px 40px 48px; max-width: 1320px; }
section { margin-top: 30px; }
h2 { font-size: 20px; font-weight: 600; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; font-weight: 600; margin: 18px 0 8px; }
p.note { color: var(--muted); margin: 6px 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 4px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px;
        min-width: 120px; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 41px; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; }
tr.muted td { color: var(--muted); }
td.bad { color: var(--bad); }
.scroll { max-height: 560px; overflow: auto; display: inline-block; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { margin: 0; }
figure { margin: 10px 0 22px; }
.row { display: flex; flex-wrap: wrap; gap: 20px; align-items: flex-start; }
.row > * { margin-top: 10px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 4px 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
      overflow: auto; max-height: 420px; font-size: 12.5px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 13px; font-weight: 600;
         background: var(--panel); border: 1px solid var(--line); }
.badge.good { color: #1b6e2d; background: #e6f4ea; border-color: #b7dfc1; }
.badge.bad { color: var(--bad); background: #fce8e6; border-color: #f3c3be; }
.badge.open { color: #8a5a00; background: #fef3dc; border-color: #f1d9a6; }
ul.verdicts { padding-left: 18px; }
ul.verdicts li { margin: 8px 0; }
code { background: var(--panel); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
footer { color: var(--muted); font-size: 12px; padding: 0 40px 30px; }
"""


def fmt(value, digits: int = 4) -> str:
    """A table cell: floats to `digits` places, integers with thousands separators, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):  # scores in 0..1 to `digits` places; seconds, milliseconds, megabytes to one
        return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


@dataclass
class Page:
    title: str
    subtitle: str = ""
    cards: list[tuple[str, str]] = field(default_factory=list)  # (label, value) headline numbers
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (anchor, title, html blocks)

    def section(self, anchor: str, title: str) -> list[str]:
        """A new section; returns its list of HTML blocks to append to (with the methods below)."""
        blocks: list[str] = []
        self.sections.append((anchor, title, blocks))
        return blocks

    def write(self, path: Path, footer: str = "") -> Path:
        nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in self.sections)
        cards = "".join(f'<div class="card"><div class="value">{html.escape(v)}</div>'
                        f'<div class="label">{html.escape(k)}</div></div>' for k, v in self.cards)
        body = "".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>{"".join(blocks)}</section>'
                       for a, t, blocks in self.sections)
        document = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                    f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                    f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
                    f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p>"
                    f'{f"<div class=cards>{cards}</div>" if cards else ""}</header>'
                    f"<nav>{nav}</nav><main>{body}</main><footer>{html.escape(footer)}</footer></body></html>\n")
        with io.atomic_path(path) as tmp:
            Path(tmp).write_text(document, encoding="utf-8")
        return Path(path)


def paragraph(text: str, note: bool = False) -> str:
    return f'<p{" class=note" if note else ""}>{html.escape(text)}</p>'


def badge(text: str, kind: str = "") -> str:
    """A short coloured label: kind "good", "bad", "open" or "" (grey)."""
    return f'<span class="badge {kind}">{html.escape(text)}</span>'


def items(entries: list[str]) -> str:
    """A list of HTML snippets (already escaped)."""
    return '<ul class="verdicts">' + "".join(f"<li>{entry}</li>" for entry in entries) + "</ul>"


def code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def heading(text: str) -> str:
    return f"<h3>{html.escape(text)}</h3>"


def figure(src: str, caption: str = "", width: int | None = None) -> str:
    """A picture by its path relative to the page (alt text = caption, so a missing file still says what it was)."""
    style = f' style="max-width:{width}px"' if width else ""
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption or src)}"{style}>'
            f'{f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""}</figure>')


def row(blocks: list[str]) -> str:
    """Blocks side by side where the window is wide enough (wrapping below each other where it is not)."""
    return f'<div class="row">{"".join(f"<div>{b}</div>" for b in blocks)}</div>'


def gallery(blocks: list[str]) -> str:
    """Figures in as many columns as fit."""
    return f'<div class="gallery">{"".join(blocks)}</div>'


def table(rows: list[dict], columns: list[str] | None = None, text_columns: tuple[str, ...] = (),
          muted: list[bool] | None = None, scroll: bool = False, headers: dict[str, str] | None = None) -> str:
    """Rows of dicts as a table (column order: `columns`, else the first row's keys; a column's heading from
    `headers`, else its key); `muted` rows are greyed."""
    if not rows:
        return paragraph("(none)", note=True)
    columns = columns or list(rows[0])
    headers = headers or {}
    head = "".join(f'<th{" class=text" if c in text_columns else ""}>{html.escape(headers.get(c, c))}</th>'
                   for c in columns)
    lines = []
    for number, row in enumerate(rows):
        cells = "".join(f'<td{" class=text" if c in text_columns else ""}>{html.escape(fmt(row.get(c)))}</td>'
                        for c in columns)
        lines.append(f'<tr{" class=muted" if muted and muted[number] else ""}>{cells}</tr>')
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    return f'<div class="scroll">{body}</div>' if scroll else body


def preformatted(text: str, summary: str | None = None) -> str:
    block = f"<pre>{html.escape(text)}</pre>"
    return f"<details><summary>{html.escape(summary)}</summary>{block}</details>" if summary else block


class ReportFolder:
    """The folder a report is written into. It must be new, empty, or hold a report written before (listed in
    its report.json), which is then replaced; a folder holding anything else is refused before any work."""

    def __init__(self, path: Path, option: str) -> None:
        self.path, self.option = Path(path), option
        self.files: list[str] = []
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{option} {self.path}: this is a file; name a folder for the report")
        previous = self._previous()
        if previous is None and self.path.is_dir() and any(self.path.iterdir()):
            example = sorted(p.name for p in self.path.iterdir())[0]
            raise UsageError(f"{option} {self.path}: the folder holds files that are not a segcli report (e.g. "
                             f"{example}); name a new or empty folder")
        self._old = previous or []

    def _previous(self) -> list[str] | None:
        """The files of a report written here before, if every entry of the folder is one of them."""
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            return None
        try:
            listed = list(io.read_json(manifest).get("files", []))
        except SegcliError:  # an unreadable manifest is not ours to trust
            return None
        tops = {Path(name).parts[0] for name in listed} | {MANIFEST}
        return listed if all(p.name in tops for p in self.path.iterdir()) else None

    def start(self) -> Path:
        """Remove the previous report (only its own files) and create the folder; call once the inputs are checked."""
        for name in self._old:
            top = self.path / Path(name).parts[0]
            if top.is_dir():
                shutil.rmtree(top)
            elif top.exists():
                top.unlink()
        (self.path / MANIFEST).unlink(missing_ok=True)
        io.prepare_out_dir(self.path, self.option)
        return self.path

    def file(self, name: str) -> Path:
        """The path of a file of the report (its folder created), recorded for report.json."""
        self.files.append(name)
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def finish(self, summary: dict) -> Path:
        return io.write_json(self.path / MANIFEST, {**summary, "files": sorted(set(self.files))}, indent=2)
