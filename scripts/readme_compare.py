"""Write the default compare run (docs/compare/results.json) into README.md between its compare markers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from segcli.services.compare_report import readme_section

BEGIN, END = "<!-- compare:begin (make readme-compare) -->", "<!-- compare:end -->"


def main(results_path: str = "docs/compare/results.json", readme_path: str = "README.md") -> None:
    results = json.loads(Path(results_path).read_text())
    replace_section(readme_path, BEGIN, END, readme_section(results, str(Path(results_path).parent)))


def replace_section(readme_path: str, begin: str, end: str, section: str) -> None:
    """README.md with `section` between its markers `begin` and `end` (both must be there)."""
    readme = Path(readme_path)
    text = readme.read_text()
    if begin not in text or end not in text:
        sys.exit(f"{readme_path}: the markers {begin} and {end} are missing")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{section}\n{end}", text))


if __name__ == "__main__":
    main(*sys.argv[1:])
