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
    readme = Path(readme_path)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{readme_path}: the markers {BEGIN} and {END} are missing")
    section = readme_section(results, str(Path(results_path).parent))
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{section}\n{END}", text))


if __name__ == "__main__":
    main(*sys.argv[1:])
