"""Write the default compare run (docs/compare/results.json) into docs/comparing.md between its compare markers:
`make docs-compare`. The plots are linked relative to the page, so the built site and a Markdown viewer both find
them."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from segcli.services.compare_report import readme_section
from segcli.services.compare_results import load

BEGIN, END = "<!-- compare:begin (make docs-compare) -->", "<!-- compare:end -->"


def main(results_path: str = "docs/compare/results.json", page_path: str = "docs/comparing.md") -> None:
    results = load(results_path)
    plots = os.path.relpath(Path(results_path).parent, Path(page_path).parent)
    replace_section(page_path, BEGIN, END, readme_section(results, Path(plots).as_posix()))


def replace_section(page_path: str, begin: str, end: str, section: str) -> None:
    """The page with `section` between its markers `begin` and `end` (both must be there)."""
    page = Path(page_path)
    text = page.read_text()
    if begin not in text or end not in text:
        sys.exit(f"{page_path}: the markers {begin} and {end} are missing")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    page.write_text(pattern.sub(lambda _: f"{begin}\n{section}\n{end}", text))


if __name__ == "__main__":
    main(*sys.argv[1:])
