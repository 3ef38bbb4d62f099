"""Every option does what it says or is refused: none is accepted and then ignored."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.train import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate("shapes", tmp_path_factory.mktemp("options") / "shapes", n=8, size=32, seed=0)


@pytest.fixture(scope="module")
def fcn_run(shapes, tmp_path_factory):
    return train(TrainConfig(data=shapes, model="fcn", mode="semantic", steps=2, batch_size=2, img_size=32, width=4,
                             out=tmp_path_factory.mktemp("options") / "fcn"))


@pytest.mark.parametrize("command", [
    ["models"], ["models", "--info", "unet"], ["data", "synth", "--kind", "shapes", "--out", "{tmp}/s"],
    ["visualize", "{tmp}/a.png"], ["export", "--weights", "{tmp}/w.safetensors", "--format", "onnx"],
    ["predict", "{tmp}/a.png"], ["eval", "--mode", "semantic", "--gt", "{tmp}", "--pred", "{tmp}"],
    ["train", "--data", "{tmp}", "--model", "unet"], ["compare", "--quick"],
])
def test_a_misspelt_device_is_refused_by_every_command(command, tmp_path):
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    result = runner.invoke(app, [*args, "--device", "bogus"])
    assert result.exit_code == 2, result.output
    assert "--device 'bogus'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()  # refused before any work


def test_cpu_only_commands_say_so_in_their_help():
    for command in (["models"], ["data", "synth"], ["visualize"], ["export"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert "runs on the CPU" in result.output, command


def _eval_data(shapes, run, *extra) -> tuple[int, dict | None, str]:
    out = shapes.parent / f"eval-{abs(hash(extra))}.json"
    result = runner.invoke(app, ["eval", "--mode", "semantic", "--data", str(shapes), "--weights", str(run.best),
                                 "--device", "cpu", "--quiet", "--json", str(out), *extra])
    return result.exit_code, (io.read_json(out) if result.exit_code == 0 else None), result.output


def test_eval_data_uses_or_refuses_every_option(shapes, fcn_run, tmp_path):
    code, plain, _ = _eval_data(shapes, fcn_run)
    assert code == 0
    code, ignored, _ = _eval_data(shapes, fcn_run, "--ignore-index", "0")
    assert code == 0 and ignored["per_class"][0]["iou"] is None and plain["per_class"][0]["iou"] is not None
    assert ignored["miou"] != plain["miou"]
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"c{i}\n" for i in range(len(plain["per_class"]))))
    code, named, _ = _eval_data(shapes, fcn_run, "--classes", str(names))
    assert code == 0 and [r["name"] for r in named["per_class"]][:2] == ["c0", "c1"]
    assert named["miou"] == plain["miou"]
    code, same, _ = _eval_data(shapes, fcn_run, "--num-classes", str(len(plain["per_class"])))
    assert code == 0 and same["miou"] == plain["miou"]
    for extra, named_option in ((["--num-classes", "99"], "--num-classes 99"),
                                (["--classes", "/no/such/file"], "/no/such/file"),
                                (["--workers", "2"], "--workers"),
                                (["--gt-dir", str(tmp_path)], "--gt-dir"),
                                (["--gt", str(tmp_path)], "--gt")):
        code, _, output = _eval_data(shapes, fcn_run, *extra)
        assert code == 2 and named_option in output and "Traceback" not in output, extra


def test_eval_files_refuse_options_of_other_modes(tmp_path):
    for mode, extra in (("instance", ["--num-classes", "3"]),
                        ("panoptic", ["--classes", "x.txt"]),
                        ("semantic", ["--gt-dir", "x"]),
                        ("semantic", ["--model", "unet"]),
                        ("instance", ["--workers", "2"])):
        result = runner.invoke(app, ["eval", "--mode", mode, "--gt", str(tmp_path), "--pred", str(tmp_path), *extra])
        assert result.exit_code == 2 and extra[0] in result.output and "not used" in result.output, (mode, extra)


def test_models_info_gflops_follow_size_for_a_detector():
    import json

    gflops = {}
    for size in (64, 256):
        result = runner.invoke(app, ["models", "--info", "maskrcnn_small", "--size", str(size), "--json"])
        assert result.exit_code == 0, result.output
        gflops[size] = json.loads(result.stdout)["gflops"]
    assert gflops[256] > 1.5 * gflops[64]


def test_class_weights_act_in_panoptic_mode(shapes, tmp_path):
    base = dict(data=shapes, model="unet_panoptic", mode="panoptic", steps=2, batch_size=2, img_size=32, width=4,
                seed=1)
    plain = train(TrainConfig(**base, out=tmp_path / "plain"))
    weighted = train(TrainConfig(**base, out=tmp_path / "weighted", class_weights="auto"))
    a, b = load_file(str(plain.last)), load_file(str(weighted.last))
    assert any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("options, refused", [
    (["--model", "maskrcnn_small", "--mode", "instance", "--class-weights", "auto"], "--class-weights"),
    (["--model", "maskrcnn_small", "--mode", "instance", "--dice", "0.5"], "--dice"),
    (["--model", "tv_lraspp_mobilenet_v3_large", "--width", "8"], "--width"),
])
def test_train_refuses_options_the_model_cannot_use(shapes, tmp_path, options, refused):
    result = runner.invoke(app, ["train", "--data", str(shapes), *options, "--steps", "1",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and refused in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r" / "last.safetensors").exists()


@pytest.mark.parametrize("option", ["--val", "--images", "--masks"])
def test_train_refuses_coco_path_options_for_a_folder_dataset(shapes, tmp_path, option):
    # Before: ignored, even for paths that do not exist (exit 0, a model trained without them).
    result = runner.invoke(app, ["train", "--data", str(shapes), "--format", "folder", "--model", "unet",
                                 option, str(tmp_path / "nowhere"), "--steps", "1", "--out", str(tmp_path / "r"),
                                 "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{option} {tmp_path / 'nowhere'}" in lines[0] and "folder" in lines[0], result.stderr
    assert not (tmp_path / "r").exists()


def test_visualize_refuses_mask_kind_with_pred(shapes, tmp_path):
    # Before: --mask-kind instance with --pred was ignored (the same pictures as without it).
    image = next((shapes / "images").glob("*.png"))
    predicted = runner.invoke(app, ["predict", str(image), "--model", "shapes", "--mode", "instance", "--out",
                                    str(tmp_path / "pred"), "--device", "cpu", "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    result = runner.invoke(app, ["visualize", str(image), "--pred", str(tmp_path / "pred"), "--mask-kind", "instance",
                                 "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and "--mask-kind" in result.stderr and "--mode" in result.stderr, result.output
    assert not (tmp_path / "v").exists()
    drawn = runner.invoke(app, ["visualize", str(image), "--pred", str(tmp_path / "pred"), "--mode", "instance",
                                "--out", str(tmp_path / "v")])
    assert drawn.exit_code == 0, drawn.output


def test_the_card_says_exactly_what_was_pretrained(shapes, tmp_path):
    # Before: `pretrained: true` for a model trained from scratch by default, `false` with --no-pretrained that
    # changed nothing; neither said what was loaded.
    from segcli import io
    from segcli.checkpoint import read_card
    from segcli.services.resolve import bundled_checkpoint

    common = ["--data", str(shapes), "--steps", "1", "--img-size", "32", "--device", "cpu", "--quiet"]
    for name, extra in (("default", []), ("none", ["--no-pretrained"])):
        result = runner.invoke(app, ["train", "--model", "unet", "--width", "4", *common, *extra,
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert read_card(tmp_path / name / "best")["pretrained"] == {"from": "nothing"}
    result = runner.invoke(app, ["train", "--model", "shapes", "--mode", "panoptic", *common,
                                 "--out", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    start = bundled_checkpoint("shapes")
    assert read_card(tmp_path / "ft" / "best")["pretrained"] == {
        "from": "segcli checkpoint", "file": str(start), "sha256": io.file_sha256(start)[:16]}
    from segcli.services.resolve import bundled_names

    for name in bundled_names():  # the bundled models were trained from random weights too
        assert read_card(bundled_checkpoint(name))["pretrained"] == {"from": "nothing"}, name
