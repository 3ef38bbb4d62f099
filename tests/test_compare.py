"""`segcli compare --quick` end to end: every file and key, and numbers that are measured, not made up."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.services.compare import CompareConfig, compare
from segcli.services.compare_report import claims

APPROACHES = ("sliding", "fullres", "fcn", "unet")
SIZES = (32, 128)  # 16x the pixels: growth shows through timing noise


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = CliRunner().invoke(app, ["compare", "--quick", "--out", str(out), "--sizes", ",".join(map(str, SIZES)),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text()), result.output


def test_every_output_file_is_written(quick_run):
    out, _, _ = quick_run
    for name in ("results.json", "results.csv", "report.md", "grid.png", "scaling.png", "tradeoff.png"):
        assert (out / name).is_file(), name
    grid = io.read_image(out / "grid.png")
    assert grid.shape[1] > grid.shape[0]  # input | truth | four approaches side by side
    for plot in ("scaling.png", "tradeoff.png"):
        assert min(io.read_image(out / plot).shape[:2]) > 300


def test_results_hold_every_measure_for_every_approach(quick_run):
    _, results, _ = quick_run
    assert set(results["environment"]) >= {"device", "threads", "torch"}
    assert results["sizes"] == list(SIZES) and results["train_images"] > 0 and results["val_images"] > 0
    assert tuple(results["approaches"]) == APPROACHES
    for name, entry in results["approaches"].items():
        assert entry["params"] > 0 and entry["gflops"] > 0 and entry["receptive_field"] > 0, name
        assert 0 <= entry["miou"] <= 1 and 0 <= entry["boundary_f1"] <= 1
        assert len(entry["per_class"]) >= 2 and entry["train_seconds"] > 0
        assert set(entry["latency_ms"]) == {str(s) for s in SIZES}
        assert set(entry["peak_memory_mb"]) == {str(s) for s in SIZES}
    sliding = results["approaches"]["sliding"]["sliding_inference"]
    assert sliding["naive_ms"] > sliding["dense_ms"] > 0
    assert sliding["max_abs_diff"] < 1e-3  # the same weights run both ways


def test_receptive_fields_follow_the_architectures(quick_run):
    _, results, _ = quick_run
    rf = {name: entry["receptive_field"] for name, entry in results["approaches"].items()}
    assert rf["fullres"] < rf["unet"] and rf["sliding"] < rf["unet"]


def test_latency_and_memory_grow_with_image_size(quick_run):
    _, results, _ = quick_run
    small, large = (str(s) for s in SIZES)
    for name in ("fullres", "unet"):
        entry = results["approaches"][name]
        assert entry["latency_ms"][large] > 2 * entry["latency_ms"][small], name
        assert entry["peak_memory_mb"][large] > entry["peak_memory_mb"][small], name


def test_csv_report_and_terminal_agree_with_results(quick_run):
    out, results, output = quick_run
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["approach"] for r in rows] == list(APPROACHES)
    assert float(rows[-1]["miou"]) == pytest.approx(results["approaches"]["unet"]["miou"], abs=1e-4)
    report = (out / "report.md").read_text()
    for claim in claims(results):
        assert claim["claim"] in report
    assert "held" in output and "unet" in output


def test_another_seed_gives_other_numbers(quick_run, tmp_path):
    _, results, _ = quick_run
    other = compare(CompareConfig(out=tmp_path, approaches=("fcn",), quick=True, seed=1, sizes=(32,), device="cpu"))
    assert other["approaches"]["fcn"]["miou"] != results["approaches"]["fcn"]["miou"]


def test_unknown_approach_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["compare", "--quick", "--approaches", "unet,no_such_net", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no_such_net" in result.output
    assert not (tmp_path / "data").exists()


def test_binary_masks_are_compared_with_binary(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 10 + i :] = 255  # ISBI-style 0/255 membrane masks
        io.write_image(tmp_path / "data" / "images" / f"m{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        io.write_instance_png(tmp_path / "data" / "masks" / f"m{i}.png", mask)
    results = compare(CompareConfig(out=tmp_path / "out", approaches=("fcn",), data=tmp_path / "data", binary=True,
                                    quick=True, img_size=32, sizes=(32,), device="cpu"))
    assert results["val_images"] >= 1 and len(results["approaches"]["fcn"]["per_class"]) == 2  # background, membrane
