"""`segcli compare`: every output, numbers that are measured (not made up), and verdicts that weigh noise."""

from __future__ import annotations

import csv
import html
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import load_checkpoint, save_checkpoint
from segcli.cli import app
from segcli.errors import UsageError
from segcli.services.compare import CompareConfig, compare, finished_run, parse_approaches
from segcli.services.compare_report import HELD, NOT_HELD, NOT_JUDGED, UNDECIDED, claims, judge, ranking, seed_stability
from segcli.services.compare_results import Approach, CompareResults, ImageCounts, Run, load
from segcli.training.config import TrainConfig

APPROACHES = ("sliding", "fullres", "fcn", "unet")
SIZES = (32, 256)  # 64x the pixels: growth (12-28x measured) shows through the timing noise of a shared CPU


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = CliRunner().invoke(app, ["compare", "--quick", "--out", str(out), "--sizes", ",".join(map(str, SIZES)),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out, load(out / "results.json"), result.output


def test_every_output_file_is_written(quick_run):
    out, _, _ = quick_run
    for name in ("results.json", "results.csv", "report.md", "report.html", "grid.png", "scaling.png", "tradeoff.png"):
        assert (out / name).is_file(), name
    grid = io.read_image(out / "grid.png")
    assert grid.shape[1] > grid.shape[0]  # input | truth | four approaches side by side
    for plot in ("scaling.png", "tradeoff.png"):
        assert min(io.read_image(out / plot).shape[:2]) > 300


def test_results_hold_every_measure_for_every_approach(quick_run):
    _, results, _ = quick_run
    assert results.environment.device == "cpu" and results.environment.threads > 0 and results.environment.torch
    assert results.sizes == list(SIZES) and results.train_images > 0 and results.val_images > 0
    assert tuple(results.approaches) == APPROACHES and results.seeds == [0]  # --quick: one seed
    for name, entry in results.approaches.items():
        assert entry.params > 0 and entry.gflops > 0 and entry.receptive_field > 0, name
        assert 0 <= entry.miou <= 1 and 0 <= entry.boundary_f1 <= 1
        assert len(entry.per_class) >= 2 and entry.train_seconds > 0
        assert set(entry.latency_ms) == {str(s) for s in SIZES}
        assert set(entry.peak_memory_mb) == {str(s) for s in SIZES}
        assert len(entry.runs[0].images.confusion) == results.val_images
    sliding = results.approaches["sliding"].sliding_inference
    assert sliding.naive_ms > sliding.dense_ms > 0
    assert sliding.max_abs_diff < 1e-3  # the same weights run both ways


KEPT_RUNS = sorted((Path(__file__).resolve().parents[1] / "docs" / "compare").rglob("results.json"))


@pytest.mark.parametrize("path", KEPT_RUNS, ids=lambda path: path.parent.name)
def test_results_json_reads_back_into_the_records_key_for_key(path, quick_run):
    """Runs kept in docs/compare/ (and a new one) give the same JSON, key order included, after a pass through the
    records: results.json keeps its format, and the records hold every field of it."""
    for text in (path.read_text(), (quick_run[0] / "results.json").read_text()):
        data = json.loads(text)
        assert json.dumps(CompareResults.from_dict(data).to_dict()) == json.dumps(data)
    with pytest.raises(ValueError, match="unknown keys"):
        CompareResults.from_dict({"approaches": {}, "accuracy": 1.0})


def test_receptive_fields_follow_the_architectures(quick_run):
    _, results, _ = quick_run
    rf = {name: entry.receptive_field for name, entry in results.approaches.items()}
    assert rf["fullres"] < rf["unet"] and rf["sliding"] < rf["unet"]


def test_latency_and_memory_grow_with_image_size(quick_run):
    _, results, _ = quick_run
    small, large = (str(s) for s in SIZES)
    for name in ("fullres", "unet"):
        entry = results.approaches[name]
        assert entry.latency_ms[large] > 2 * entry.latency_ms[small], name
        assert entry.peak_memory_mb[large] > entry.peak_memory_mb[small], name


def test_a_quick_run_judges_nothing(quick_run):
    out, results, output = quick_run
    found = claims(results) + ranking(results)
    assert len(claims(results)) == 4 and all(c.verdict == NOT_JUDGED and c.reason for c in found)
    assert "not judged (--quick" in output
    assert "did not hold" not in output and "held" not in output.replace("did not hold", "")
    verdict_lines = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("- *")]
    assert len(verdict_lines) == len(found) and all("**not judged** (--quick" in line for line in verdict_lines)


def test_csv_report_and_terminal_agree_with_results(quick_run):
    out, results, output = quick_run
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["approach"] for r in rows] == list(APPROACHES)
    assert float(rows[-1]["miou"]) == pytest.approx(results.approaches["unet"].miou, abs=1e-4)
    report = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for claim in claims(results):
        assert claim.claim in report and html.escape(claim.claim) in page
    assert all(f'src="{name}"' in page for name in ("grid.png", "scaling.png", "tradeoff.png"))
    unet = results.approaches["unet"]
    tolerances = [f"{unet.boundary_f1_px[k]:.3f}" for k in ("1", "2", "4", "objects-1")]
    assert "| unet | " + " | ".join([f"{unet.boundary_f1:.3f}", *tolerances[:3]]) in report  # every tolerance shown
    assert tolerances[3] in report
    assert "unet" in output


@pytest.fixture(scope="module")
def seeded_run(quick_run, tmp_path_factory):
    """Not --quick: U-Net twice under two names with 2 seeds each, and a constant model given by --weights."""
    out, _, _ = quick_run
    constant = tmp_path_factory.mktemp("constant") / "constant"
    model, card = load_checkpoint(out / "runs" / "unet" / "last.safetensors")
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # every pixel gets the bias: class 0 (grass) everywhere
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0] + [0.0] * (head.bias.numel() - 1)))
    save_checkpoint(constant, model, card)
    seeded = tmp_path_factory.mktemp("seeded")
    runner = CliRunner().invoke(app, [
        "compare", "--data", str(out / "data"), "--approaches", "unet,again=unet,constant=unet", "--weights",
        f"constant={constant}.safetensors", "--seeds", "2", "--budget-steps", "40", "--img-size", "64", "--sizes", "32",
        "--out", str(seeded), "--device", "cpu"])
    assert runner.exit_code == 0, runner.output
    return load(seeded / "results.json"), runner.output, seeded


def test_spread_comes_from_real_repeated_runs(seeded_run):
    results, _, _ = seeded_run
    unet = results.approaches["unet"]
    assert results.seeds == [0, 1] and [run.seed for run in unet.runs] == [0, 1]
    mious = [run.miou for run in unet.runs]
    assert mious[0] != mious[1]  # two trainings, not one copied
    assert unet.spread["miou"] == [min(mious), max(mious)]
    assert unet.miou == pytest.approx(np.mean(mious))
    confusion = np.asarray(unet.runs[0].images.confusion).sum(0)
    tp, gt, pred = np.diag(confusion[:, :-1]), confusion.sum(1), confusion[:, :-1].sum(0)
    union = gt + pred - tp
    assert unet.runs[0].miou == pytest.approx((tp[union > 0] / union[union > 0]).mean())  # eval's mIoU, summed


def test_the_same_approach_under_two_names_is_not_decided(seeded_run):
    results, output, seeded = seeded_run
    for label in ("unet", "again"):  # two trainings per seed, each in its own folder, not one copied
        assert all(not run.reused and run.train_seconds > 0 for run in results.approaches[label].runs)
        assert (seeded / "runs" / f"{label}-seed1" / "last.safetensors").is_file()
    for metric in ("miou", "boundary_f1", "interior_accuracy"):
        assert judge(results, "unet", "again", metric).verdict == UNDECIDED, metric
    verdicts = {item.claim: item.verdict for item in ranking(results)}
    pair = [v for claim, v in verdicts.items() if "unet" in claim and "again" in claim]
    assert pair == [UNDECIDED] and "not decided" in output


def test_one_seed_against_another_is_not_judged(seeded_run):
    """U-Net seed 0 against U-Net seed 1: the image bootstrap alone would call the luckier seed better."""
    results, _, _ = seeded_run
    unet = results.approaches["unet"]
    one = replace(results, approaches={"first": replace(unet, runs=unet.runs[:1]),
                                       "second": replace(unet, runs=unet.runs[1:])})
    found = ranking(one)
    assert found and all(item.verdict == NOT_JUDGED and "1 seed" in item.reason for item in found)


def test_a_constant_model_is_told_from_a_trained_one(seeded_run):
    results, output, _ = seeded_run
    trained, constant = results.approaches["unet"], results.approaches["constant"]
    assert constant.train_seconds == 0 and len(constant.runs) == 1  # --weights: no training, one model
    assert constant.collapsed and constant.runs[0].majority_share == 1.0
    assert not trained.collapsed and trained.spread["miou"][0] > constant.miou + 0.1
    against = [item for item in ranking(results) if "constant" in item.claim]
    assert against and all(item.verdict == NOT_JUDGED and "collapsed" in item.reason for item in against)


def test_a_rerun_in_the_same_folder_reuses_finished_trainings(seeded_run, quick_run):
    results, _, seeded = seeded_run
    again = compare(CompareConfig(out=seeded, approaches=("unet",), data=quick_run[0] / "data", seeds=2, steps=40,
                                  img_size=64, sizes=(32,), device="cpu"))
    before, after = results.approaches["unet"].runs, again.approaches["unet"].runs
    assert [run.reused for run in before] == [False, False] and [run.reused for run in after] == [True, True]
    assert [run.miou for run in after] == [run.miou for run in before]
    assert [run.train_seconds for run in after] == pytest.approx([run.train_seconds for run in before], abs=5)
    training = json.loads((seeded / "runs" / "unet-seed0" / "last.json").read_text())["training"]
    assert finished_run(TrainConfig(**training)) is not None
    assert finished_run(TrainConfig(**(training | {"steps": 41}))) is None  # another budget is another run


def _images(scores: list[float], n: int = 6) -> ImageCounts:
    """Per-image counts of a 2-class problem where each image's class-1 pixels are right with the given rate."""
    confusion, hits, totals, boundary = [], [], [], []
    for i in range(n):
        right = int(100 * scores[i % len(scores)])
        confusion.append([[100, 0, 0], [100 - right, right, 0]])
        hits.append([100, right])
        totals.append([100, 100])
        boundary.append(scores[i % len(scores)])
    return ImageCounts(confusion=confusion, interior_hits=hits, interior_totals=totals,
                       boundary_f1={"default": boundary})


def _results(**approaches: list[list[float]]) -> CompareResults:
    return CompareResults(approaches={name: Approach(model=name, runs=[Run(seed=i, images=_images(seed))
                                                                       for i, seed in enumerate(seeds)])
                                      for name, seeds in approaches.items()})


def test_verdicts_weigh_the_margin_against_the_spread():
    apart = _results(good=[[0.9, 0.8], [0.85, 0.9]], poor=[[0.5, 0.6], [0.55, 0.5]])
    assert judge(apart, "good", "poor", "miou").verdict == HELD
    assert judge(apart, "poor", "good", "miou").verdict == NOT_HELD
    # The means differ, but one seed of each overlaps the other's range: not decided.
    overlapping = _results(good=[[0.9, 0.8], [0.6, 0.55]], poor=[[0.5, 0.6], [0.7, 0.65]])
    assert judge(overlapping, "good", "poor", "boundary_f1").verdict == UNDECIDED
    # Seeds apart, but the images disagree about which is better: not decided either.
    mixed = _results(good=[[1.0, 0.2, 1.0]], poor=[[0.3, 0.9, 0.4]])
    assert judge(mixed, "good", "poor", "boundary_f1").verdict == UNDECIDED


def test_each_verdict_is_judged_again_without_each_seed():
    """One poor seed of the better approach keeps the verdict undecided; left out, the verdict would be held."""
    results = _results(good=[[0.9, 0.8], [0.85, 0.9], [0.5, 0.55]], poor=[[0.6, 0.6], [0.6, 0.65], [0.62, 0.6]])
    results.approaches["good"].miou, results.approaches["poor"].miou = 0.8, 0.6
    results = replace(results, seeds=[0, 1, 2], val_images=6)
    table = seed_stability(results)
    assert "| all 3 seeds | without seed 0 | without seed 1 | without seed 2 |" in table
    assert "| good is more accurate than poor (mIoU) | not decided | not decided | not decided | held |" in table
    assert seed_stability(results.without_seed(2)) is None  # two seeds: leaving one out leaves nothing to judge


def test_unknown_or_repeated_approach_is_refused_before_any_work(tmp_path):
    for approaches in ("unet,no_such_net", "unet,unet"):
        result = CliRunner().invoke(app, ["compare", "--quick", "--approaches", approaches, "--out", str(tmp_path)])
        assert result.exit_code == 2 and ("no_such_net" in result.output or "twice" in result.output), result.output
    assert not (tmp_path / "data").exists()


def test_encoder_variants_are_named_like_the_zoo_s_encoders():
    assert parse_approaches(("unet", "unet:resnet34", "r18=fcn:resnet18")) == {
        "unet": "unet", "unet:resnet34": "unet:resnet34", "r18": "fcn:resnet18"}
    for bad, words in (("sliding:resnet34", "fixed encoder"), ("unet:resnet999", "unknown encoder")):
        with pytest.raises(UsageError, match=words):
            parse_approaches((bad,))


def test_binary_masks_are_compared_with_binary(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 10 + i :] = 255  # ISBI-style 0/255 membrane masks
        io.write_image(tmp_path / "data" / "images" / f"m{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        io.write_instance_png(tmp_path / "data" / "masks" / f"m{i}.png", mask)
    results = compare(CompareConfig(out=tmp_path / "out", approaches=("fcn",), data=tmp_path / "data", binary=True,
                                    quick=True, img_size=32, sizes=(32,), device="cpu"))
    assert results.val_images >= 1 and len(results.approaches["fcn"].per_class) == 2  # background, membrane


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_page_and_boundary_study_are_rendered_from_results(quick_run, tmp_path):
    out, results, _ = quick_run
    page = tmp_path / "docs" / "comparing.md"
    page.parent.mkdir()
    page.write_text("before\n<!-- compare:begin (make docs-compare) -->\nSTALE-SECTION\n<!-- compare:end -->\nafter\n")
    _script("docs_compare").main(str(out / "results.json"), str(page))
    text = page.read_text()
    assert text.startswith("before") and text.endswith("after\n") and "STALE-SECTION" not in text
    assert "not judged" in text and f"{results.approaches['unet'].miou:.3f}" in text
    plots = os.path.relpath(out, page.parent)  # linked from the page's folder, so the built site finds them
    assert f"![grid]({plots}/grid.png)" in text and (page.parent / plots / "grid.png").is_file()
    study = tmp_path / "boundary.md"
    study.write_text("# study\n<!-- study:begin (make compare-boundary) -->\n<!-- study:end -->\n")
    _script("boundary_study").main(str(study), str(tmp_path / "boundary.png"), str(out))
    table = study.read_text()
    assert "| context (synthetic) | 20 | 1 | 1 px |" in table and (tmp_path / "boundary.png").is_file()
    assert "objects, 2% diagonal" in table  # cow and goat are things, grass is stuff


def test_docs_bench_table_comes_from_the_results(tmp_path):
    results = {"_environment": {"date": "2026-12-05 15:00 UTC", "cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1",
                                "cpu_capability": "AVX512", "bfloat16": True, "load_average_at_start": [0.4],
                                "load_average_at_end": [1.9], "total_seconds": 512.0},
               "bench_startup": {"name": "segcli --version and --help", "measured": "0.20 s and 0.21 s",
                                 "target": "< 0.5 s", "met": True},
               "bench_train": {"checks": [{"name": "train vs a plain loop", "measured": "0.97", "target": ">= 0.95",
                                           "met": True, "verdict": "PASS"}]}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    page = tmp_path / "performance.md"
    page.write_text("before\n<!-- bench:begin (make docs-bench) -->\nSTALE\n<!-- bench:end -->\nafter\n")
    _script("docs_bench").main(str(tmp_path / "results.json"), str(page))
    text = page.read_text()
    assert "STALE" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "| segcli --version and --help | 0.20 s and 0.21 s | < 0.5 s | PASS |" in text
    assert "| train vs a plain loop | 0.97 | >= 0.95 | PASS |" in text and "load average 0.4" in text
