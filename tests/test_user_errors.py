"""User errors end in one line naming the file or option, and exit code 2 (docs/robustness.md), never a traceback."""

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
    damaged = {"garbage": os.urandom(len(data)), "truncated": data[: len(data) // 2], "empty": b""}[damage]
    tiny_checkpoint.write_bytes(damaged)
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
        result = runner.invoke(app, ["predict", str(image), "--model", "tv_lraspp_mobilenet_v3_large",
                                     "--weights", str(path), "--out", str(tmp_path / "o"), "--quiet",
                                     "--device", "cpu"])
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


def _refused(result, *names: str) -> str:
    assert result.exit_code == 2, result.output
    return one_line(result, *names)


@pytest.mark.parametrize("option, value", [
    ("--steps", "-3"), ("--steps", "0"), ("--epochs", "0"), ("--batch-size", "0"), ("--img-size", "0"),
    ("--img-size", "8"), ("--crop", "8"), ("--width", "0"), ("--lr", "-1"), ("--workers", "-1"),
    ("--val-limit", "0"), ("--patience", "0"), ("--warmup", "-1"), ("--val-every", "-1"), ("--dice", "-1"),
    ("--clip", "-1"), ("--center-sigma", "0"), ("--boundary-width", "0"), ("--contact-weight", "0"),
])
def test_train_refuses_numbers_out_of_range_before_any_file(tmp_path, option, value):
    # Before: --steps -3 trained nothing and exited 0; --batch-size 0, --workers -1, --img-size 0 or 8, --crop 8
    # crashed with a traceback after writing plan.json; the others were accepted and meant nothing.
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=4, size=32, seed=0)
    model = {"--center-sigma": "unet_panoptic", "--boundary-width": "unet_contour",
             "--contact-weight": "unet_contour"}.get(option, "unet")
    mode = {"unet_panoptic": "panoptic", "unet_contour": "instance"}.get(model, "semantic")
    size = [] if option in ("--img-size", "--crop") else ["--img-size", "32"]
    result = runner.invoke(app, ["train", "--data", str(data), "--model", model, "--mode", mode, option, value, *size,
                                 "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet",
                                 *([] if option in ("--steps", "--epochs") else ["--steps", "1"])])
    _refused(result, f"{option} {value}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value, named", [("--schedule", "cosin", "--schedule 'cosin'"),
                                                  ("--class-weights", "yes", "--class-weights 'yes'")])
def test_train_names_the_choice_that_is_wrong(tmp_path, option, value, named):
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--model", "unet", option, value, "--quiet"])
    _refused(result, named)  # before: one message for both options, naming neither value


@pytest.mark.parametrize("extra, named", [
    (["--budget-steps", "0"], "--budget-steps 0"),  # before: 0 fell back to the preset's steps without a word
    (["--sizes", "0"], "--sizes 0"),  # before: a traceback after all the training
    (["--sizes", "abc"], "--sizes 'abc'"),
    (["--approaches", ","], "--approaches"),  # before: a traceback, results.json of nothing left behind
    (["--weights", "unet={missing}"], "missing.safetensors"),  # before: named only after the data was made
])
def test_compare_refuses_bad_options_before_any_work(tmp_path, extra, named):
    args = [a.replace("{missing}", str(tmp_path / "missing.safetensors")) for a in extra]
    approaches = [] if "--approaches" in extra else ["--approaches", "unet"]
    result = runner.invoke(app, ["compare", "--quick", *approaches, *args, "--out", str(tmp_path / "cmp"), "--device",
                                 "cpu", "--quiet"])
    _refused(result, named.replace("{missing}", ""))
    assert not (tmp_path / "cmp").exists()


def test_models_info_refuses_a_size_the_models_cannot_take():
    _refused(runner.invoke(app, ["models", "--info", "unet", "--size", "0", "--json"]), "--size 0")


@pytest.mark.parametrize("opset", ["3", "7", "99"])
def test_export_names_an_opset_torch_cannot_use(tiny_checkpoint, tmp_path, opset):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", "--weights", str(tiny_checkpoint), "--format", "onnx", "--opset", opset,
                                 "--out", str(out), "--quiet"])
    _refused(result, f"--opset {opset}", "17")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no .onnx, no temporary file


def test_data_synth_out_naming_a_file(tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    result = runner.invoke(app, ["data", "synth", "--kind", "shapes", "--out", str(taken), "--n", "2", "--size", "32"])
    _refused(result, "--out", str(taken), "file")
    assert taken.read_text() == "mine"


@pytest.mark.parametrize("command", [["predict", "{img}", "--out", "{tmp}/o"], ["export", "--format", "onnx"],
                                     ["eval", "--mode", "semantic", "--data", "{tmp}", "--json", "-"]])
def test_weights_naming_a_folder_or_nothing(command, image, tiny_checkpoint, tmp_path):
    for weights, said in ((tiny_checkpoint.parent, "a folder, not a checkpoint"),
                          (tmp_path / "nope.safetensors", "no such file")):
        args = [a.replace("{img}", str(image)).replace("{tmp}", str(tmp_path)) for a in command]
        result = runner.invoke(app, [*args, "--weights", str(weights), "--device", "cpu", "--quiet"])
        line = _refused(result, str(weights), said)
        assert ".json" not in line  # before: "ckpt.json: checkpoint card missing", of a file nobody named


@pytest.mark.parametrize("args, named", [
    (["train", "--data", "x", "--model", "unet", "--steps", "abc"], "'--steps'"),
    (["predict"], "'inputs'"),
    (["predict", "a.png", "--bogus"], "--bogus"),
    (["models", "--mode", "bogus"], "'--mode'"),
    (["frobnicate"], "'frobnicate'"),
])
def test_an_option_that_does_not_parse_is_one_line(args, named):
    # Before: click's usage box, five or six lines.
    line = _refused(runner.invoke(app, args), named)
    assert line.startswith("error:") and "--help" in line


def test_a_refusal_before_any_work_has_no_blank_line_above_it(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr.startswith("error:"), repr(result.stderr)
    assert not (tmp_path / "o").exists()


def test_resume_with_nothing_to_resume_leaves_no_file(tmp_path):
    # Before: refused only after plan.json was written into the new run folder.
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=4, size=32, seed=0)
    result = runner.invoke(app, ["train", "--data", str(data), "--model", "unet", "--width", "4", "--steps", "1",
                                 "--img-size", "32", "--out", str(tmp_path / "run"), "--resume", "--quiet",
                                 "--device", "cpu"])
    _refused(result, str(tmp_path / "run" / "last"), "resume")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--contact-weight", "10"), ("--boundary-width", "2")])
def test_train_refuses_a_contour_setting_for_a_model_without_one(tmp_path, option, value):
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=4, size=32, seed=0)
    result = runner.invoke(app, ["train", "--data", str(data), "--model", "unet_panoptic", "--mode", "panoptic", option,
                                 value, "--img-size", "32", "--steps", "1", "--out", str(tmp_path / "run"),
                                 "--device", "cpu", "--quiet"])
    _refused(result, option, "no such setting")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value, said", [
    ("--nms-kernel", "8", "odd"),  # before: a traceback (the help says odd)
    ("--nms-kernel", "-1", "odd"),  # before: a traceback
    ("--top-k", "-2", "1 or more"),  # before: accepted, and it silently dropped objects
    ("--top-k", "0", "1 or more"),
    ("--stuff-area", "-5", "0 or more"),
    ("--center-threshold", "-1", "[0, 1]"),
    ("--center-threshold", "nan", "[0, 1]"),
    ("--interior-threshold", "1.5", "[0, 1]"),
    ("--min-area", "-1", "0 or more"),
    ("--score-threshold", "2", "[0, 1]"),
])
def test_post_processing_values_out_of_range_are_refused_up_front(image, tmp_path, option, value, said):
    out = tmp_path / "out"
    predicted = runner.invoke(app, ["predict", str(image), "--model", "shapes", "--mode", "panoptic", option, value,
                                    "--out", str(out), "--device", "cpu"])
    _refused(predicted, f"{option} {value}", said)
    assert not out.exists()
    from segcli.data.synth import generate

    data = generate("shapes", tmp_path / "shapes", n=2, size=32, seed=0)
    scored = runner.invoke(app, ["eval", "--mode", "panoptic", "--data", str(data), "--model", "shapes", option, value,
                                 "--json", str(tmp_path / "m.json"), "--device", "cpu"])
    _refused(scored, f"{option} {value}", said)
    assert not (tmp_path / "m.json").exists()


def test_a_tile_under_twice_the_models_stride_is_refused(image, tmp_path):
    # Before: --tile 8 on a stride-16 model ran 15x slower.
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(image), "--model", "shapes", "--tile", "8", "--out", str(out),
                                 "--device", "cpu"])
    _refused(result, "--tile 8", "32 or more", "0 to never tile")
    assert not out.exists()
    for tile in ("32", "0"):
        result = runner.invoke(app, ["predict", str(image), "--model", "shapes", "--tile", tile, "--out",
                                     str(tmp_path / tile), "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command, name, closest", [
    (["predict", "{img}", "--out", "{tmp}/o"], "shape", "did you mean shapes?"),  # before: the zoo listed, no bundled
    (["predict", "{img}", "--out", "{tmp}/o"], "nucleus", "did you mean nuclei?"),
    (["predict", "{img}", "--out", "{tmp}/o"], "UNet_Panoptic", "did you mean unet_panoptic?"),
    (["train", "--data", "{tmp}", "--out", "{tmp}/run"], "unet-contour", "did you mean unet_contour?"),
])
def test_an_unknown_model_suggests_the_closest_of_every_name(command, name, closest, image, tmp_path):
    args = [a.replace("{img}", str(image)).replace("{tmp}", str(tmp_path)) for a in command]
    line = _refused(runner.invoke(app, [*args, "--model", name, "--device", "cpu"]), f"'{name}'", closest)
    assert "nuclei" in line and "shapes" in line and "hf:ORG/NAME" in line and "unet_stardist" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [[], ["predict"], ["train"], ["visualize"], ["models"], ["data", "synth"]])
def test_help_shows_no_value_type_for_flags(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout  # before: `--version <bool>`, `--recursive -r <bool>`
    assert "--help" in result.stdout


def test_data_help_says_what_is_there():
    # Before: "generate synthetic data, convert formats" when only `data synth` existed.
    result = runner.invoke(app, ["data", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "convert formats" in result.stdout
    commands = [line.strip("│ ").split()[0] for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert {"synth", "convert"} <= set(commands), commands
