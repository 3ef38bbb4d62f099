"""Weights on first use, offline: downloads from file:// URLs into a temporary hub cache, hash checks, --offline,
and the resolution order (--weights FILE with --model tv_*, then names, then the mode's default)."""

from __future__ import annotations

import json
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hub_helpers import serve_bytes, serve_torchvision
from torchvision.models import segmentation as tvseg
from typer.testing import CliRunner

from segcli import hub, io
from segcli.cli import app
from segcli.errors import ModelError
from segcli.services.resolve import DEFAULT_MODELS, resolve_model

runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network call was made")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)


def test_download_lands_in_the_hub_cache_and_is_reused(tmp_path, torch_home, capfd):
    payload = b"weights" * 1000
    weights = SimpleNamespace(url=serve_bytes(tmp_path / "served", "thing", payload), meta={})
    path = hub.fetch(weights)
    assert path.parent == torch_home and path.read_bytes() == payload
    assert "B" in capfd.readouterr().err  # torch.hub's progress bar, on stderr
    assert sorted(p.name for p in torch_home.iterdir()) == [path.name]  # no .partial file left
    (tmp_path / "served" / path.name).unlink()  # served no more: the cached copy answers
    assert hub.fetch(weights) == path


def test_corrupt_download_is_refused_and_leaves_nothing(tmp_path, torch_home):
    weights = SimpleNamespace(url=serve_bytes(tmp_path / "served", "thing", b"x" * 5000, corrupt=True), meta={})
    with pytest.raises(ModelError, match="corrupt"):
        hub.fetch(weights, progress=False)
    assert not torch_home.exists() or list(torch_home.iterdir()) == []


def test_corrupt_cached_file_is_refused_and_removed(tmp_path, torch_home):
    url = serve_bytes(tmp_path / "served", "thing", b"y" * 100)
    cached = torch_home / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"z" * 100)  # same name, other bytes
    with pytest.raises(ModelError, match="SHA-256"):
        hub.fetch(SimpleNamespace(url=url, meta={}))
    assert not cached.exists()


def test_offline_refuses_before_any_network_call(tmp_path, torch_home, no_network, monkeypatch):
    monkeypatch.setenv("SEGCLI_OFFLINE", "1")
    weights = SimpleNamespace(url="https://download.example/models/thing-0123abcd.pth", meta={})
    with pytest.raises(hub.OfflineError) as error:
        hub.fetch(weights, model="tv_thing")
    message = str(error.value)
    assert "thing-0123abcd.pth" in message and str(torch_home) in message and weights.url in message


def test_cli_offline_default_model_lists_what_works_offline(tmp_path, torch_home, no_network):
    image = tmp_path / "photo.png"
    io.write_image(image, np.zeros((32, 32, 3), np.uint8))
    result = runner.invoke(app, ["predict", str(image), "--mode", "semantic", "--offline",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "usable offline here" in lines[0] and "deeplabv3_resnet50_coco" in lines[0]


def test_default_model_of_each_mode_is_fetched_on_first_use(tmp_path, torch_home, monkeypatch):
    torch.manual_seed(0)
    state = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict()
    serve_torchvision(monkeypatch, tmp_path / "served", "lraspp_mobilenet_v3_large", state)
    monkeypatch.setitem(DEFAULT_MODELS, "semantic", "tv_lraspp_mobilenet_v3_large")
    net, card = resolve_model("semantic")
    assert card["model"] == "tv_lraspp_mobilenet_v3_large" and len(card["label_space"]["names"]) == 21
    assert (torch_home / card["weights"].rsplit("/", 1)[1]).is_file()
    assert torch.equal(net.net.backbone["0"][0].weight, state["backbone.0.0.weight"])


def _lraspp_state(tmp_path):
    torch.manual_seed(0)
    reference = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    path = tmp_path / "lraspp.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def _voc_folder(root, n=4, size=64):
    """A folder dataset in the 21 VOC classes of torchvision's semantic models."""
    rng = np.random.default_rng(0)
    names = hub.torchvision_weights("lraspp_mobilenet_v3_large").meta["categories"]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for i in range(n):
        io.write_image(root / "images" / f"im{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[8:40, 8:40] = 15  # a "person"
        io.write_class_png(root / "masks" / f"im{i}.png", mask, [(0, 0, 0)] * 21)
    return root


def test_model_tv_with_weights_file_predicts_evaluates_and_trains(tmp_path, torch_home, no_network):
    reference, state_path = _lraspp_state(tmp_path)
    data = _voc_folder(tmp_path / "voc")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(data / "images" / "im0.png"), "--model", "tv_lraspp_mobilenet_v3_large",
                                 "--weights", str(state_path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        from segcli.preprocess import image_to_tensor

        expected = reference(image_to_tensor(io.read_image(data / "images" / "im0.png"))[None])["out"].argmax(1)[0]
    assert np.array_equal(io.read_label_png(out / "semantic" / "im0.png"), expected.numpy().astype(np.uint8))

    metrics = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", "--data", str(data), "--model", "tv_lraspp_mobilenet_v3_large", "--weights",
                                 str(state_path), "--mode", "semantic", "--json", str(metrics), "--quiet"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(metrics.read_text())["pixel_accuracy"] <= 1.0

    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(data), "--model", "tv_lraspp_mobilenet_v3_large",
                                 "--weights", str(state_path), "--steps", "2", "--batch-size", "2", "--img-size", "64",
                                 "--lr", "1e-4", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    from segcli.checkpoint import load_checkpoint

    trained, card = load_checkpoint(run / "last")
    first = reference.state_dict()["backbone.0.0.weight"]
    assert (trained.net.backbone["0"][0].weight - first).abs().max() < 1e-2  # started from the file, not at random
    assert card["model_args"]["weights"] == str(state_path)


def test_weights_without_card_and_without_tv_model_says_what_to_do(tmp_path):
    _, state_path = _lraspp_state(tmp_path)
    with pytest.raises(ModelError, match="--model tv_"):
        resolve_model("semantic", weights=state_path)


def test_models_lists_cache_state_and_fetches(tmp_path, torch_home, monkeypatch):
    served = serve_torchvision(monkeypatch, tmp_path / "served", "lraspp_mobilenet_v3_large", {"w": torch.zeros(3)})
    result = runner.invoke(app, ["models", "--json"])
    row = next(r for r in json.loads(result.stdout) if r["name"] == "tv_lraspp_mobilenet_v3_large")
    assert row["weights"][0]["cached"] is False and row["weights"][0]["url"] == served.url
    deeplab = next(r for r in json.loads(result.stdout) if r["name"] == "tv_deeplabv3_resnet50")
    assert deeplab["default_for"] == ["semantic"] and deeplab["weights"][0]["size_mb"] > 100

    result = runner.invoke(app, ["models", "--fetch", "tv_lraspp_mobilenet_v3_large", "--quiet"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(runner.invoke(app, ["models", "--json"]).stdout) if r["name"] == row["name"])
    assert row["weights"][0]["cached"] is True and (torch_home / row["weights"][0]["file"]).is_file()

    result = runner.invoke(app, ["models", "--fetch", "unet"])
    assert result.exit_code == 2 and "no pretrained weights" in result.output
