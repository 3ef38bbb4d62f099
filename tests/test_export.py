"""segcli export --format onnx: the file, its card, dynamic sizes through onnxruntime, and what is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli.checkpoint import load_checkpoint, make_card, save_checkpoint
from segcli.cli import app
from segcli.models.registry import build_model
from segcli.structures import LabelSpace

runner = CliRunner()
SPACE = LabelSpace(["bg", "a", "b"], isthing=[False, True, True])
TRACE_SIZE = 64


def _checkpoint(directory: Path, name: str, mode: str) -> Path:
    args = {"num_classes": 3, "width": 4}
    return save_checkpoint(directory / name, build_model(name, **args), make_card(name, args, mode, SPACE))


@pytest.fixture(scope="module", params=[("unet", "semantic"), ("unet_panoptic", "panoptic")], ids=lambda p: p[0])
def checkpoint(request, tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("export"), *request.param)


def _export(*args) -> object:
    return runner.invoke(app, ["export", "--format", "onnx", "--size", str(TRACE_SIZE), "--device", "cpu",
                               *map(str, args)])


def test_export_writes_graph_with_named_outputs_and_card(checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx")
    result = _export("--weights", checkpoint, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "m.onnx") in result.stderr
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    model, card = load_checkpoint(checkpoint)
    assert [i.name for i in graph.graph.input] == ["images"]
    assert [o.name for o in graph.graph.output] == sorted(model(torch.zeros(1, 3, 32, 32)))
    meta = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert meta["segcli_card"]["model"] == card["model"]
    assert meta["mean"] == card["normalization"]["mean"] and meta["label_space"]["names"] == ["bg", "a", "b"]


def test_default_out_is_the_weights_path_with_onnx_suffix(tmp_path):
    pytest.importorskip("onnx")
    weights = _checkpoint(tmp_path, "unet", "semantic")
    assert _export("--weights", weights, "--quiet").exit_code == 0
    assert weights.with_suffix(".onnx").is_file()


def test_onnxruntime_matches_torch_at_another_size(checkpoint, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    assert _export("--weights", checkpoint, "--out", tmp_path / "m.onnx").exit_code == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    model, _ = load_checkpoint(checkpoint)
    images = torch.randn(2, 3, 96, 128)  # batch, height and width all differ from the trace's (1, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
    names = [o.name for o in session.get_outputs()]
    for name, got in zip(names, session.run(None, {"images": images.numpy()}), strict=True):
        np.testing.assert_allclose(got, expected[name].numpy(), atol=1e-4, err_msg=name)


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    result = _export("--weights", _checkpoint(tmp_path, "unet", "semantic"))
    assert result.exit_code == 2 and "pip install 'segcli[onnx]'" in result.stderr


def test_maskrcnn_is_refused(tmp_path):
    args = {"num_classes": 3, "width": 4, "thing_classes": SPACE.thing_indices}
    weights = save_checkpoint(tmp_path / "maskrcnn", build_model("maskrcnn_small", **args),
                              make_card("maskrcnn_small", args, "instance", SPACE))
    result = _export("--weights", weights)
    assert result.exit_code == 2 and "cannot be exported as one ONNX graph" in result.stderr
    assert not weights.with_suffix(".onnx").exists()


def test_other_formats_and_odd_sizes_are_refused(tmp_path):
    weights = _checkpoint(tmp_path, "unet", "semantic")
    assert runner.invoke(app, ["export", "--weights", str(weights), "--format", "tflite"]).exit_code == 2
    result = runner.invoke(app, ["export", "--weights", str(weights), "--format", "onnx", "--size", "50"])
    assert result.exit_code == 2 and "--size 50" in result.stderr
