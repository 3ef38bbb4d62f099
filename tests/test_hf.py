"""`hf:` models (the [hf] extra): a tiny random Mask2Former saved to a folder goes through predict,
tiling, eval and the offline refusal exactly as segcli's own models do. Nothing touches the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.metrics import pq_compute
from segcli.models import hf_zoo
from segcli.models.hf_coco import coco_ids_for
from segcli.structures import mask_to_xywh

pytest.importorskip("transformers")
pytest.importorskip("scipy")

runner = CliRunner()
NAMES = ["person", "car", "sky-other-merged", "grass-merged"]  # COCO panoptic names: ids 1, 3, 187, 193
COCO_IDS = [1, 3, 187, 193]
ISTHING = [True, True, False, False]
LOW = ["--score-threshold", "0.3"]  # the random model's thing queries score 0.5-0.6, below Mask2Former's 0.8


def save_tiny(folder: Path, names: list[str]) -> Path:
    """A Mask2Former with a 4-stage Swin of width 16 and 8 queries (0.35 M parameters), random weights, classes
    `names`, saved with its image processor (64 x 64 px input) as `save_pretrained` writes any checkpoint."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(image_size=64, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, hidden_dim=32, num_queries=8, encoder_layers=1,
                               decoder_layers=2, feature_size=32, mask_feature_size=32, dim_feedforward=64,
                               encoder_feedforward_dim=64, num_attention_heads=2, id2label=dict(enumerate(names)),
                               label2id={n: i for i, n in enumerate(names)}, use_pretrained_backbone=False)
    torch.manual_seed(2)
    net = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():  # confident queries, never "no object", sharp masks: random weights still yield segments
        net.class_predictor.weight.mul_(30)
        net.class_predictor.bias[-1] = -20
        net.get_parameter("model.transformer_module.decoder.mask_predictor.mask_embedder.2.0.weight").mul_(100)
    net.save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-m2f"), NAMES)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, shape in (("a", (60, 80)), ("b", (72, 56))):
        io.write_image(folder / f"{name}.png", rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    return folder


def _predict(args: list) -> tuple[object, list[dict]]:
    result = runner.invoke(app, ["predict", *map(str, args), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def _check_categories(out: Path) -> None:
    categories = io.read_json(out / "categories.json")["categories"]
    assert [c["name"] for c in categories] == NAMES  # from the checkpoint's config.id2label
    assert [c["id"] for c in categories] == COCO_IDS and [bool(c["isthing"]) for c in categories] == ISTHING


def _check_panoptic(out: Path, lines: list[dict]) -> list[dict]:
    """SPEC's panoptic files, as segcli's own models write them; returns every segment of the --json lines."""
    data = io.read_json(out / "panoptic.json")
    assert [c["id"] for c in data["categories"]] == COCO_IDS
    for ann, line in zip(data["annotations"], lines):
        ids = io.read_panoptic_png(out / "panoptic" / ann["file_name"])
        assert ids.shape == io.read_image(line["input"]).shape[:2]
        present = dict(zip(*np.unique(ids, return_counts=True)))
        present.pop(0, None)
        infos = {s["id"]: s for s in ann["segments_info"]}
        assert set(infos) == set(present)  # the PNG's ids are exactly segments_info's
        labels = [COCO_IDS.index(s["category_id"]) for s in infos.values()]
        stuff = [label for label in labels if not ISTHING[label]]
        assert len(stuff) == len(set(stuff))  # one segment per stuff class
        for segment_id, info in infos.items():
            assert info["area"] == present[segment_id] and info["bbox"] == list(mask_to_xywh(ids == segment_id))
            assert ("score" in info) == ISTHING[COCO_IDS.index(info["category_id"])]
        assert [s["id"] for s in line["segments"]] == list(infos)
    assert pq_compute(out / "panoptic.json", out / "panoptic.json")["pq"] == 1.0  # panopticapi's own checks pass
    return [segment for line in lines for segment in line["segments"]]


def _check_instances(out: Path, lines: list[dict]) -> list[dict]:
    """SPEC's instance PNG (ids 1..N by score) and COCO results json (RLE) agree; returns the results."""
    results = io.read_json(out / "instances.json")
    assert {r["category_id"] for r in results} <= {1, 3}  # things only
    for line in lines:
        stem = Path(line["input"]).stem
        ids = io.read_label_png(out / "instance" / f"{stem}.png")
        assert ids.shape == io.read_image(line["input"]).shape[:2]
        segments = line["segments"]
        assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
        assert [s["score"] for s in segments] == sorted((s["score"] for s in segments), reverse=True)
        for number, entry in enumerate([r for r in results if r["image_id"] == stem], 1):
            rle = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()}
            mask = mask_utils.decode(rle).astype(bool)
            assert entry["area"] == int(mask.sum()) and entry["bbox"] == list(mask_to_xywh(mask))
            assert not (ids == number)[~mask].any()  # the PNG shows an instance only inside its own mask
    return results


def _check_semantic(out: Path, lines: list[dict]) -> None:
    for line in lines:
        labels = io.read_label_png(out / "semantic" / f"{Path(line['input']).stem}.png")
        assert labels.shape == io.read_image(line["input"]).shape[:2] and labels.max() < len(NAMES)
        assert {s["id"]: s["area"] for s in line["segments"]} == dict(zip(*np.unique(labels, return_counts=True)))
        assert all(s["category"] == NAMES[s["id"]] for s in line["segments"])


def test_predicts_panoptic_with_the_checkpoints_classes(tiny, photos, tmp_path):
    out = tmp_path / "out"
    _, lines = _predict([photos, "--model", f"hf:{tiny}", "--mode", "panoptic", "--out", out, *LOW])
    assert len(lines) == 2 and all(line["ok"] for line in lines)
    assert {s["isthing"] for s in _check_panoptic(out, lines)} == {True, False}  # things and stuff
    _check_categories(out)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.jpg", "b.jpg"]


def test_predicts_instances_as_segcli_models_do(tiny, photos, tmp_path):
    out = tmp_path / "out"
    _, lines = _predict([photos, "--model", f"hf:{tiny}", "--mode", "instance", "--out", out])
    assert _check_instances(out, lines)
    _check_categories(out)


def test_predicts_semantic_maps(tiny, photos, tmp_path):
    out = tmp_path / "out"
    _, lines = _predict([photos, "--model", f"hf:{tiny}", "--mode", "semantic", "--out", out])
    _check_semantic(out, lines)
    _check_categories(out)


def test_no_progress_bar_for_a_checkpoint_on_disk(tiny, photos, tmp_path):
    """transformers' "Loading weights" bar is not a download: a checkpoint already here loads silently."""
    result, _ = _predict([photos, "--model", f"hf:{tiny}", "--mode", "semantic", "--out", tmp_path / "out"])
    assert "Loading weights" not in result.stderr and "it/s" not in result.stderr


def test_not_tiled_unless_asked(tiny, photos, tmp_path):
    """The processor resizes every image: predict's default tiling (for large images) stays off for hf: models."""
    from segcli.services.predict import PredictConfig, predict

    events = []
    config = PredictConfig([str(photos)], mode="semantic", model=f"hf:{tiny}", out=tmp_path / "out", device="cpu")
    predict(config, callback=lambda event, **info: events.append((event, info.get("tile"))))
    assert events[0] == ("start", None)


@pytest.mark.parametrize("mode", ["semantic", "instance", "panoptic"])
def test_tiles_a_large_image(tiny, tmp_path, mode):
    photo = tmp_path / "wide.png"
    io.write_image(photo, np.random.default_rng(1).integers(0, 255, (70, 150, 3), dtype=np.uint8))
    out = tmp_path / "out"
    _, lines = _predict([photo, "--model", f"hf:{tiny}", "--mode", mode, "--tile", "64", "--out", out, *LOW])
    {"semantic": _check_semantic, "instance": _check_instances, "panoptic": _check_panoptic}[mode](out, lines)
    _check_categories(out)


def test_panoptic_conversion_fuses_stuff_and_keeps_ids_unique(tiny):
    """Four queries: two persons, then sky twice; segcli fuses the skies into one segment."""
    model = hf_zoo.load(f"hf:{tiny}", "panoptic")
    logits = torch.full((1, 8, len(NAMES) + 1), -20.0)
    for query, label in enumerate([0, 0, 2, 2]):
        logits[0, query, label] = 20.0
    masks = torch.full((1, 8, 16, 16), -20.0)
    masks[0, 0, :8, :8] = masks[0, 1, :8, 8:] = masks[0, 2, 8:, :8] = masks[0, 3, 8:, 8:] = 20.0
    outputs = {"class_queries_logits": logits, "masks_queries_logits": masks, "image_size": torch.tensor([[32, 48]])}
    prediction = model.postprocess(outputs)[0]
    assert [(s.label, s.area) for s in prediction.segments] == [(0, 384), (0, 384), (2, 768)]
    assert sorted(np.unique(prediction.panoptic).tolist()) == [1, 2, 3]
    assert [i.label for i in prediction.instances] == [0, 0]


def test_eval_data_scores_an_hf_model(tiny, photos, tmp_path):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    (data / "images").mkdir()
    for path in photos.glob("*.png"):
        image = io.read_image(path)
        io.write_image(data / "images" / path.name, image)
        io.write_image(data / "masks" / path.name, np.full(image.shape[:2], 2, np.uint8))
    (data / "classes.txt").write_text("\n".join(NAMES) + "\n")
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--data", str(data), "--model", f"hf:{tiny}", "--mode", "semantic",
                                 "--split", "all", "--json", str(report), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= io.read_json(report)["miou"] <= 1.0


def test_models_lists_the_mask2former_checkpoints():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "400"})  # whole descriptions, not cut to 80 columns
    assert result.exit_code == 0
    for checkpoint in hf_zoo.ZOO.values():
        assert checkpoint.name in result.stdout and checkpoint.description in result.stdout  # [hf] kept: no markup


def test_default_panoptic_model_is_mask2former_when_the_extra_is_installed(monkeypatch, torch_home):
    from segcli.services import resolve

    asked = []
    monkeypatch.setattr(resolve, "_hf_model", lambda mode, name, device: asked.append((name, mode)) or (None, {}))
    resolve.resolve_model("panoptic")
    assert asked == [(hf_zoo.DEFAULT_PANOPTIC, "panoptic")]
    monkeypatch.setattr(hf_zoo, "available", lambda: False)
    monkeypatch.setenv("SEGCLI_OFFLINE", "1")  # the torchvision default is not cached: refused, with the hint
    monkeypatch.setenv("SEGCLI_WEIGHTS", "")
    monkeypatch.setattr(resolve, "REPO_WEIGHTS", Path("/nonexistent"))
    with pytest.raises(Exception, match=r"pip install 'segcli\[hf\]'"):
        resolve.resolve_model("panoptic")


def test_modes_a_checkpoint_cannot_do_are_refused(photos):
    result = runner.invoke(app, ["predict", str(photos), "--model", "hf:facebook/mask2former-swin-tiny-ade-semantic",
                                 "--mode", "panoptic"])
    assert result.exit_code == 2 and "cannot do --mode panoptic" in result.output


@pytest.mark.parametrize("command", ["predict", "fetch"])
def test_offline_with_an_empty_cache_is_one_clear_line(tmp_path, photos, monkeypatch, command):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    name = "hf:facebook/mask2former-swin-tiny-coco-panoptic"
    args = {"predict": ["predict", str(photos), "--model", name, "--mode", "panoptic", "--out", str(tmp_path / "out"),
                        "--device", "cpu"],
            "fetch": ["models", "--fetch", name]}[command]
    result = runner.invoke(app, args, env={"SEGCLI_OFFLINE": "1"})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "offline" in lines[0] and name in lines[0] and f"segcli models --fetch {name}" in lines[0]
    assert str(tmp_path / "hf") in lines[0] and not (tmp_path / "out" / "panoptic").exists()


def _hub_cache(cache: Path, repo: str, folder: Path) -> Path:
    """`folder`'s files laid out as huggingface_hub caches a download of `repo`: refs/main names a snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / commit)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    return entry / "snapshots" / commit


def test_the_default_panoptic_model_runs_offline_from_the_hugging_face_cache(tiny, photos, tmp_path, monkeypatch):
    """The zoo's COCO panoptic name, its files (here the tiny model's) in the cache: listed as here, fetched
    without a download, and predict's default for --mode panoptic, offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SEGCLI_OFFLINE", "1")
    name = hf_zoo.DEFAULT_PANOPTIC
    assert not hf_zoo.is_cached(name)
    snapshot = _hub_cache(tmp_path / "hf", name.removeprefix(hf_zoo.PREFIX), tiny)
    assert hf_zoo.is_cached(name)
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    assert rows[name]["weights"][0]["cached"] and rows[name]["default_for"] == ["panoptic"]
    result = runner.invoke(app, ["models", "--fetch", name, "--offline"])
    assert result.exit_code == 0 and f"{name}: {snapshot}" in result.output.replace("\n", "")  # rich wraps lines
    out = tmp_path / "out"
    _, lines = _predict([photos, "--mode", "panoptic", "--offline", "--out", out, *LOW])  # no --model
    assert {s["category"] for s in _check_panoptic(out, lines)} <= set(NAMES)
    _check_categories(out)
    # Online too, files in the cache are read from it: no request to the Hub (none could be answered here).
    import huggingface_hub.file_download

    def no_network(*args, **kwargs):
        raise AssertionError("a request to the Hugging Face Hub")

    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", no_network)
    monkeypatch.setenv("SEGCLI_OFFLINE", "0")
    _predict([photos, "--mode", "panoptic", "--out", tmp_path / "online"])


@pytest.mark.parametrize("mode", ["semantic", "instance", "panoptic"])
def test_visualize_draws_hf_predictions_with_the_checkpoints_names(tiny, photos, tmp_path, mode):
    from segcli.services.visualize import VisualizeConfig, _background, _prediction, _source, visualize

    pred = tmp_path / "pred"
    _predict([photos, "--model", f"hf:{tiny}", "--mode", mode, "--out", pred, *LOW])
    pictures = tmp_path / "pictures"
    result = runner.invoke(app, ["visualize", str(photos), "--pred", str(pred), "--side-by-side",
                                 "--out", str(pictures)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in pictures.iterdir()) == ["a.png", "b.png"]
    labels = _prediction(_source(VisualizeConfig(inputs=[str(photos)], pred=pred)), photos / "a.png", "a", None)
    assert labels.space.names == NAMES
    assert _background(labels.space) is None  # class 0 (COCO's person) is a class to draw, not background
    if mode == "semantic":  # the prediction as its own ground truth: every image's IoU is 1
        summary = visualize(VisualizeConfig(inputs=[str(photos)], pred=pred, gt=pred / "semantic", out=tmp_path / "e"))
        assert summary.ious == {"a": 1.0, "b": 1.0}


def test_eval_data_scores_its_own_panoptic_predictions_perfectly(tiny, photos, tmp_path):
    """predict's panoptic files read back as a COCO panoptic dataset: eval --data predicts the same segments with
    the same COCO category ids and thing flags, so PQ is 1 for things and stuff."""
    out = tmp_path / "out"
    _predict([photos, "--model", f"hf:{tiny}", "--mode", "panoptic", "--out", out, *LOW])
    data = tmp_path / "data"
    shutil.copytree(photos, data / "images")
    shutil.copytree(out / "panoptic", data / "panoptic")
    predicted = io.read_json(out / "panoptic.json")
    images = [{"id": a["image_id"], "file_name": a["file_name"], "height": shape[0], "width": shape[1]}
              for a in predicted["annotations"] for shape in [io.read_image(photos / a["file_name"]).shape]]
    io.write_json(data / "panoptic.json", {**predicted, "images": images})
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--data", str(data / "panoptic.json"), "--model", f"hf:{tiny}", "--mode",
                                 "panoptic", "--split", "all", "--json", str(report), "--device", "cpu", *LOW])
    assert result.exit_code == 0, result.output
    scores = io.read_json(report)
    assert scores["pq"] == 1.0 and scores["things"]["n"] > 0 and scores["stuff"]["n"] > 0


def test_coco_names_give_panopticapis_ids_and_eval_reads_real_coco_panoptic(shared_data, tmp_path):
    """The published COCO checkpoints list panopticapi's 133 categories in its order (things, then stuff, by id):
    the names alone give the json's ids and thing flags, and eval --data scores a model so named on real COCO
    panoptic ground truth (random weights: the score itself means nothing)."""
    root = shared_data / "coco_panoptic_sample"
    categories = io.read_json(root / "panoptic_coco_categories.json")
    names = [c["name"] for c in categories]
    assert coco_ids_for(names) == ([c["id"] for c in categories], [bool(c["isthing"]) for c in categories])
    model = save_tiny(tmp_path / "coco", names)
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["eval", "--data", str(root), "--model", f"hf:{model}", "--mode", "panoptic",
                                 "--split", "all", "--json", str(report), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scores = io.read_json(report)
    assert [(row["id"], row["name"]) for row in scores["per_class"]] == [(c["id"], c["name"]) for c in categories]
    assert 0.0 <= scores["pq"] <= 1.0 and scores["images"] == 2


def test_ids_and_thing_flags_come_from_the_config_else_the_names_else_defaults():
    from types import SimpleNamespace

    coco = SimpleNamespace(id2label=dict(enumerate(NAMES)))
    space = hf_zoo.label_space(coco, hf_zoo.MODES)
    assert (space.names, space.category_ids, space.isthing) == (NAMES, COCO_IDS, ISTHING)
    own = SimpleNamespace(id2label={0: "cell", 1: "membrane"})
    assert hf_zoo.label_space(own, hf_zoo.MODES).category_ids == [1, 2]
    assert hf_zoo.label_space(own, hf_zoo.MODES).isthing == [True, True]  # each query its own segment
    assert hf_zoo.label_space(own, ("semantic",)).isthing == [False, False]  # a semantic checkpoint's classes: stuff
    given = SimpleNamespace(id2label={0: "cell", 1: "membrane"}, category_ids=[7, 9], isthing=[1, 0])
    space = hf_zoo.label_space(given, hf_zoo.MODES)
    assert (space.category_ids, space.isthing) == ([7, 9], [True, False])
    assert (0, 0, 0) not in space.colors  # no class is drawn as the VOC background


def test_models_info_reads_the_checkpoint_here_and_downloads_nothing(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    result = runner.invoke(app, ["models", "--info", f"hf:{tiny}", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["classes"], facts["things"], facts["input_size"]) == (4, 2, {"height": 64, "width": 64})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    name = "hf:facebook/mask2former-swin-tiny-ade-semantic"
    facts = json.loads(runner.invoke(app, ["models", "--info", name, "--json"]).stdout)
    assert facts["modes"] == ["semantic"] and facts["weights"] == f"not on this machine: segcli models --fetch {name}"
    assert "segcli[hf]" in facts["description"] and not (tmp_path / "hf").exists()


def test_without_the_extra_a_default_panoptic_run_says_how_to_get_stuff(tiny, photos, tmp_path, monkeypatch):
    from segcli.services import resolve

    # Stands in for torchvision's Mask R-CNN (weights not here).
    net, card = resolve.resolve_model("panoptic", f"hf:{tiny}")
    monkeypatch.setattr(resolve, "_library_model", lambda mode, model, device: (net, dict(card, model=model)))
    monkeypatch.setattr(hf_zoo, "available", lambda: False)
    monkeypatch.setenv("SEGCLI_WEIGHTS", "")
    monkeypatch.setattr(resolve, "REPO_WEIGHTS", Path("/nonexistent"))
    result, lines = _predict([photos, "--mode", "panoptic", "--out", tmp_path / "out"])
    assert all(line["ok"] for line in lines)
    assert "--mode panoptic with tv_maskrcnn_resnet50_fpn_v2: COCO things only" in result.stderr
    assert "pip install 'segcli[hf]' makes a COCO panoptic Mask2Former the default" in result.stderr
    quiet, _ = _predict([photos, "--mode", "panoptic", "--out", tmp_path / "quiet", "--quiet"])
    assert "segcli[hf]" not in quiet.stderr


def test_without_a_network_the_hub_fails_at_once_with_the_offline_line(photos, tmp_path, monkeypatch):
    """Before: with no network, huggingface_hub retried each file for about 30 s, then a message unlike --offline's."""
    import socket

    import huggingface_hub.constants

    with socket.socket() as probe:  # a port nothing listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("SEGCLI_OFFLINE", "0")
    lines = {}
    for name, extra in (("no network", []), ("offline", ["--offline"])):  # --offline last: it sets SEGCLI_OFFLINE
        result = runner.invoke(app, ["predict", str(photos), "--mode", "panoptic", "--out", str(tmp_path / "out"),
                                     "--device", "cpu", *extra])
        assert result.exit_code == 2, result.output
        (lines[name],) = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines["no network"] == lines["offline"].replace("offline:", f"offline ({endpoint} cannot be reached):", 1)
    assert "segcli models --fetch" in lines["offline"] and not (tmp_path / "out").exists()
