"""Every report opened from disk in headless Chromium (file://, no server): each image loads, the console stays
free of errors, and the screenshot is a page, not a blank. `.ci/run` installs Debian's chromium when missing."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install "
                                                          "chromium; .ci/run installs it)")
runner = CliRunner()

# Put in the page's <head>, before anything loads: records failed resources and console errors, then on load writes
# what it saw (and each image's naturalWidth) into the DOM, where --dump-dom shows it.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(e.message
  || ("failed to load " + (e.target.src || e.target.href))), true);
const __error = console.error; console.error = (...a) => { window.__errors.push(a.join(" ")); __error(...a); };
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth}));
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({images: images, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """An eval report of each mode and the report of a short training run."""
    root = tmp_path_factory.mktemp("browser")
    synth = generate("shapes", root / "shapes", n=8, size=64, seed=0)
    found = {}
    for mode in ("semantic", "instance", "panoptic"):
        found[mode] = root / f"eval-{mode}"
        done = runner.invoke(app, ["eval", "--mode", mode, "--data", str(synth), "--model", "shapes", "--report",
                                   str(found[mode]), "--quiet", "--json", str(root / f"{mode}.json")])
        assert done.exit_code == 0, done.output
    run = root / "run"
    done = runner.invoke(app, ["train", "--data", str(synth), "--model", "unet", "--steps", "4", "--val-every", "2",
                               "--batch-size", "3", "--img-size", "32", "--width", "4", "--out", str(run),
                               "--log", "none"])
    assert done.exit_code == 0, done.output
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    found["run"] = run / "report"
    found["compare"] = _compare_report(root / "compare")
    return found


def _compare_report(folder):
    """compare's report.html of the committed default run (its results.json and plots), written here."""
    from segcli.services.compare_report import write_html_report
    from segcli.services.compare_results import load

    source = Path(__file__).resolve().parents[1] / "docs" / "compare"
    folder.mkdir()
    for name in ("grid.png", "scaling.png", "tradeoff.png"):
        shutil.copyfile(source / name, folder / name)
    write_html_report(folder / "report.html", load(source / "results.json"))
    return folder


def open_in_chromium(report, tmp_path) -> tuple[dict, str, np.ndarray]:
    """(what the probe saw, Chromium's log, the screenshot) of report.html opened from disk."""
    page = (report / "report.html").read_text()
    probe = report / "probe.html"  # beside the report, so its relative image paths resolve the same
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    flags = [CHROMIUM, "--no-sandbox", "--headless=new", "--disable-gpu", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    try:
        dumped = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    match = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert match, dumped.stderr[-2000:]
    seen = json.loads(html.unescape(match.group(1)))
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", (report / "report.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
    return seen, dumped.stderr, io.read_image(shot)


@pytest.mark.parametrize("which", ["semantic", "instance", "panoptic", "run", "compare"])
def test_report_opens_offline_with_every_image_and_no_console_error(reports, tmp_path, which):
    seen, log, screenshot = open_in_chromium(reports[which], tmp_path)
    assert seen["images"], "the page shows no picture"
    assert [i["src"] for i in seen["images"] if i["width"] == 0] == []
    assert seen["errors"] == []
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert console == []
    assert screenshot.shape[:2] == (2000, 1280) and screenshot.std() > 20
    inked = (screenshot.min(2) < 160).any(1)  # screen rows holding text, tables or pictures
    assert inked.mean() > 0.3, "the screenshot is mostly blank"
