"""User errors end in one line naming the file or option, and exit code 2 (README, "Exit codes"), never a traceback."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()


def one_line(result, *names: str) -> str:
    """The run's only non-empty stderr line, which names every one of `names`."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in" / "a.png"
    io.write_image(path, np.full((24, 24, 3), 100, np.uint8))
    return path


def _predict(image, weights, out, *extra):
    return runner.invoke(app, ["predict", str(image), "--weights", str(weights), "--out", str(out), "--device", "cpu",
                               "--quiet", *extra])


def test_a_working_checkpoint_predicts(image, tiny_checkpoint, tmp_path):
    assert _predict(image, tiny_checkpoint, tmp_path / "out").exit_code == 0
    assert (tmp_path / "out" / "semantic" / "a.png").is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_weights_file_is_one_line_and_exit_2(image, tiny_checkpoint, tmp_path, damage):
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes({"garbage": os.urandom(len(data)), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    result = _predict(image, tiny_checkpoint, tmp_path / "out")
    assert result.exit_code == 2
    one_line(result, str(tiny_checkpoint), "safetensors")


def test_a_card_that_does_not_match_its_weights_is_one_line(image, tiny_checkpoint, tmp_path):
    card_path = tiny_checkpoint.with_suffix(".json")
    card = io.read_json(card_path)
    for edit, named in ((lambda c: c["model_args"].update(width=8), "do not fit"),
                        (lambda c: c["model_args"].update(num_classes=5), "5"),
                        (lambda c: c.update(label_space={"names": ["x", "y"]}), "2 classes"),
                        (lambda c: c["label_space"].update(names=["x", "y"]), "label_space"),
                        (lambda c: c["model_args"].update(colour="blue"), "model_args")):
        changed = json.loads(json.dumps(card))
        edit(changed)
        io.write_json(card_path, changed)
        result = _predict(image, tiny_checkpoint, tmp_path / "out")
        assert result.exit_code == 2, result.output
        one_line(result, str(tiny_checkpoint.with_suffix("")), named)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates the marker file


def test_a_pickle_payload_in_a_pth_never_runs(tmp_path, image):
    from segcli.models.pretrained import load_state_dict

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(str(marker))}, evil)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    shutil.copy(tmp_path / "plain.pkl", tmp_path / "plain.pth")
    for path in (evil, tmp_path / "plain.pth"):
        with pytest.raises(Exception, match="without unpickling code") as caught:
            load_state_dict(path)
        assert caught.type.__name__ == "ModelError"
        result = runner.invoke(app, ["predict", str(image), "--model", "tv_lraspp_mobilenet_v3_large", "--weights", str(path),
                                     "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"])
        assert result.exit_code == 2
        one_line(result, str(path.with_suffix("")))
    assert not marker.exists()


def test_predict_out_naming_a_file(image, tiny_checkpoint, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = _predict(image, tiny_checkpoint, taken)
    assert result.exit_code == 2
    one_line(result, "--out", str(taken), "file")
    assert taken.read_text() == "mine"


def test_train_out_naming_a_file(tmp_path):
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=4, size=32, seed=0)
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = runner.invoke(app, ["train", "--data", str(data), "--model", "unet", "--width", "4", "--steps", "1",
                                 "--img-size", "32", "--out", str(taken), "--quiet"])
    assert result.exit_code == 2
    one_line(result, "--out", str(taken))
    assert taken.read_text() == "mine"


def test_eval_instance_given_a_panoptic_json(tmp_path):
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=4, size=32, seed=0)
    panoptic = sorted(data.rglob("*panoptic*.json"))[0]
    results = tmp_path / "results.json"
    io.write_json(results, [])
    result = runner.invoke(app, ["eval", "--mode", "instance", "--gt", str(panoptic), "--pred", str(results),
                                 "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    one_line(result, str(panoptic), "--mode panoptic")
