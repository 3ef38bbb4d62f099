"""segcli tune: the coordinate search and its tie rule, where the choice is written in the card, and that predict
then post-processes with it; bundled models tuned into a copy; the refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import read_card
from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.resolve import bundled_checkpoint
from segcli.services.tune import TIE, record_choice, search_thresholds

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate("shapes", tmp_path_factory.mktemp("tune") / "shapes", n=8, size=96, seed=5)


def shapes_copy(folder: Path, **postprocess) -> Path:
    """The bundled shapes model (panoptic card) under another name, its card's thresholds changed by `postprocess`."""
    weights = bundled_checkpoint("shapes")
    card = read_card(weights)
    card["postprocess"] = {**card["postprocess"], **postprocess}
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, folder / "model.safetensors")
    io.write_json(folder / "model.json", card)
    return folder / "model.safetensors"


def _invoke(*args):
    return runner.invoke(app, [*map(str, args), "--device", "cpu"])


# ---------------------------------------------------------------- the search


def test_one_threshold_at_a_time_each_value_with_the_others_at_their_best():
    peak = {"a": 0.3, "b": 20}
    calls = []

    def score(values):
        calls.append(dict(values))
        return 1 - abs(values["a"] - peak["a"]) - abs(values["b"] - peak["b"]) / 100

    start, grid = {"a": 0.5, "b": 10, "c": 1}, {"a": [0.3, 0.5, 0.7], "b": [5, 20]}
    chosen, best, tried = search_thresholds(score, start, grid, "pq")
    assert chosen == {"a": 0.3, "b": 20, "c": 1} and best == pytest.approx(1.0)
    assert calls[3] == {"a": 0.3, "b": 5, "c": 1}  # b searched with a at its best so far
    assert len(calls) == len(tried) == 5  # the start's a=0.5 again is not scored twice
    assert tried[0] == {"a": 0.5, "b": 10, "c": 1, "pq": round(score({"a": 0.5, "b": 10}), 4)}


def test_a_tie_keeps_the_setting_scored_first():
    scores = {10: 0.800, 20: 0.800 + TIE / 2, 5: 0.800 + 2 * TIE}
    chosen, _, _ = search_thresholds(lambda v: scores[v["min_area"]], {"min_area": 10}, {"min_area": [20]}, "ap")
    assert chosen["min_area"] == 10  # within the tie margin: the card's value stays
    chosen, best, _ = search_thresholds(lambda v: scores[v["min_area"]], {"min_area": 10}, {"min_area": [20, 5]}, "ap")
    assert chosen["min_area"] == 5 and best == scores[5]


def test_the_cards_own_mode_writes_postprocess_another_mode_postprocess_by_mode():
    card = {"mode": "panoptic", "postprocess": {"min_area": 10},
            "postprocess_search": {"metric": "pq", "best": 0.5, "tried": []}}  # one search, as recorded before modes
    card = record_choice(card, "instance", {"min_area": 5}, {"metric": "ap"})
    assert card["postprocess"] == {"min_area": 10} and card["postprocess_by_mode"] == {"instance": {"min_area": 5}}
    card = record_choice(card, "panoptic", {"min_area": 40}, {"metric": "pq"})
    assert card["postprocess"] == {"min_area": 40} and card["postprocess_by_mode"] == {"instance": {"min_area": 5}}
    assert set(card["postprocess_search"]) == {"instance", "panoptic"}
    assert card["postprocess_search"]["instance"]["metric"] == "ap"


# ---------------------------------------------------------------- through the CLI


def _panoptic_pngs(out: Path) -> list[np.ndarray]:
    return [io.read_panoptic_png(p) for p in sorted((out / "panoptic").glob("*.png"))]


def test_tune_writes_thresholds_that_predict_then_uses(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m", top_k=1)  # one object per image at most: a bad setting
    result = _invoke("tune", "--data", shapes, "--weights", weights, "--grid", "top_k=1,200", "--json")
    assert result.exit_code == 0, result.output
    search = json.loads(result.stdout)
    assert search["mode"] == "panoptic" and search["metric"] == "pq" and search["split"] == "val"
    assert [t["top_k"] for t in search["tried"]] == [1, 200] and search["chosen"]["top_k"] == 200
    card = read_card(weights)
    assert card["postprocess"]["top_k"] == 200  # the card's own mode
    assert card["postprocess_search"]["panoptic"]["best"] == round(search["best"], 4)
    # predict post-processes with the card's new value: as the old card with the option given, not as the old card.
    before = shapes_copy(tmp_path / "old", top_k=1)
    runs = {}
    for name, args in (("tuned", ["--weights", weights]), ("old", ["--weights", before]),
                       ("old_with_option", ["--weights", before, "--top-k", "200"])):
        result = _invoke("predict", shapes / "images", *args, "--mode", "panoptic", "--out", tmp_path / f"pred-{name}",
                         "--no-overlay")
        assert result.exit_code == 0, result.output
        runs[name] = _panoptic_pngs(tmp_path / f"pred-{name}")
    assert all(np.array_equal(a, b) for a, b in zip(runs["tuned"], runs["old_with_option"]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs["tuned"], runs["old"]))


def test_another_mode_is_tuned_by_its_metric_into_postprocess_by_mode(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m")
    result = _invoke("tune", "--data", shapes, "--weights", weights, "--mode", "instance", "--grid", "top_k=1")
    assert result.exit_code == 0, result.output
    assert "tune (instance)" in result.stdout and "ap" in result.stdout  # the table, on stdout
    card = read_card(weights)
    assert card["postprocess_by_mode"]["instance"]["top_k"] == 200  # one object per image lost: the card's kept
    assert card["postprocess_search"]["instance"]["metric"] == "ap"
    assert card["postprocess"] == read_card(bundled_checkpoint("shapes"))["postprocess"]


def test_a_bundled_model_is_tuned_into_a_copy_and_its_own_card_never_changes(shapes, tmp_path):
    bundled_card = bundled_checkpoint("shapes").with_suffix(".json")
    digest = hashlib.sha256(bundled_card.read_bytes()).hexdigest()
    refused = _invoke("tune", "--data", shapes, "--model", "shapes", "--grid", "top_k=100")
    assert refused.exit_code == 2 and "--out" in refused.output
    copy = tmp_path / "tuned" / "shapes.safetensors"
    result = _invoke("tune", "--data", shapes, "--model", "shapes", "--grid", "center_threshold=0.2",
                     "--out", copy, "-q")
    assert result.exit_code == 0, result.output
    assert copy.read_bytes() == bundled_checkpoint("shapes").read_bytes()
    assert "panoptic" in read_card(copy)["postprocess_search"]
    assert hashlib.sha256(bundled_card.read_bytes()).hexdigest() == digest


def test_default_grids_follow_the_models_thresholds(shapes, tmp_path):
    weights = shapes_copy(tmp_path / "m")
    result = _invoke("tune", "--data", shapes, "--weights", weights, "--json")
    assert result.exit_code == 0, result.output
    tried = json.loads(result.stdout)["tried"]
    assert {t["center_threshold"] for t in tried} == {0.05, 0.1, 0.2, 0.3}  # Panoptic-DeepLab: centres, then NMS window
    assert {t["nms_kernel"] for t in tried} == {3, 5, 7, 9, 11}


@pytest.mark.parametrize("args, message", [
    ([], "tune needs --weights FILE"),
    (["--grid", "top_k"], "write NAME=V1,V2"),
    (["--grid", "top_k=a,b"], "write NAME=V1,V2"),
    (["--grid", "min_area=5"], "--grid min_area: shapes's post-processing takes center_threshold"),
    (["--grid", "top_k=2.5"], "top_k takes whole numbers"),
    (["--grid", "top_k=1", "--grid", "top_k=2"], "given twice"),
])
def test_refusals_are_one_line(args, message, shapes, tmp_path):
    weights = [] if not args else ["--weights", shapes_copy(tmp_path / "m")]
    result = _invoke("tune", "--data", shapes, *weights, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
