"""segcli predict: every input kind, each output file's format, --json, exit codes, resume, shards, stems."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import card_label_space, make_card, read_card, save_checkpoint
from segcli.cli import app
from segcli.data.synth import generate, synth_label_space
from segcli.metrics import pq_compute
from segcli.models.registry import build_model
from segcli.services.evaluate import evaluate_instance, evaluate_panoptic
from segcli.services.predict import PredictConfig, plan_jobs, predict
from segcli.services.train import TrainConfig, train
from segcli.structures import mask_to_xywh

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return generate("shapes", tmp_path_factory.mktemp("predict") / "shapes", n=8, size=48, seed=0)


@pytest.fixture(scope="module")
def checkpoint(shapes, tmp_path_factory) -> Path:
    """unet_panoptic, width 8, trained for a few steps: one checkpoint for all three modes, with several instances."""
    run = tmp_path_factory.mktemp("run") / "run"
    config = TrainConfig(data=shapes, model="unet_panoptic", mode="panoptic", out=run, steps=24, batch_size=4,
                         img_size=48, width=8, val_every=0, seed=0, device="cpu")
    return train(config).best


def _images(shapes: Path) -> list[Path]:
    return sorted((shapes / "images").glob("*.png"))


def _predict(args: list[str], stdin: str | None = None):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu"], input=stdin)


def _lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- outputs of each mode


def test_semantic_outputs_are_palette_pngs_and_json_lines_match(shapes, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = _predict([shapes / "images", "--weights", checkpoint, "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    space = card_label_space(read_card(checkpoint))
    lines = _lines(result)
    assert [Path(line["input"]) for line in lines] == _images(shapes)  # stdout: only the records, in input order
    for line in lines:
        stem = Path(line["input"]).stem
        assert line["ok"] and line["mode"] == "semantic" and line["seconds"] >= 0
        png = out / "semantic" / f"{stem}.png"
        assert line["outputs"] == {"semantic": str(png), "overlay": str(out / "overlays" / f"{stem}.jpg")}
        with Image.open(png) as img:
            assert img.mode == "P"
            assert img.getpalette()[: 3 * space.num_classes] == [v for color in space.colors for v in color]
            labels = np.array(img)
        assert labels.dtype == np.uint8 and labels.shape == (48, 48) and labels.max() < space.num_classes
        assert {s["id"]: s["area"] for s in line["segments"]} == dict(zip(*np.unique(labels, return_counts=True)))
        for segment in line["segments"]:
            label = segment["id"]
            assert segment["category"] == space.names[label] and segment["category_id"] == space.category_ids[label]
            assert segment["bbox"] == list(mask_to_xywh(labels == label)) and "score" not in segment
        assert io.read_image(out / "overlays" / f"{stem}.jpg").shape[1] > 48  # the image, and a legend beside it
    assert io.read_json(out / "categories.json") == {"categories": space.coco_categories()}
    # Only this mode's folders.
    assert sorted(p.name for p in out.iterdir()) == [".parts", "categories.json", "overlays", "semantic"]


def test_instance_png_json_and_coco_results_agree(shapes, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = _predict([shapes / "images", "--weights", checkpoint, "--out", out, "--mode", "instance", "--json",
                       "--no-overlay"])
    assert result.exit_code == 0, result.output
    results = io.read_json(out / "instances.json")
    assert results and not (out / "overlays").exists()
    space = card_label_space(read_card(checkpoint))
    for line in _lines(result):
        stem = Path(line["input"]).stem
        ids = io.read_label_png(out / "instance" / f"{stem}.png")
        assert ids.dtype == np.uint16
        segments = line["segments"]
        assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in segments}
        scores = [s["score"] for s in segments]
        assert scores == sorted(scores, reverse=True)
        mine = [r for r in results if r["image_id"] == stem]
        assert len(mine) == len(segments)
        for number, (entry, segment) in enumerate(zip(mine, segments), start=1):
            assert set(entry) == {"image_id", "file_name", "category_id", "segmentation", "bbox", "score", "area"}
            assert entry["file_name"] == f"{stem}.png" and isinstance(entry["segmentation"]["counts"], str)
            decoded = mask_utils.decode({**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), ids == number)  # bottom-up instances are disjoint
            assert entry["area"] == segment["area"] == int((ids == number).sum())
            assert entry["bbox"] == segment["bbox"] == list(mask_to_xywh(ids == number))
            assert entry["score"] == segment["score"] and entry["category_id"] in space.category_ids


def test_panoptic_png_and_json_pass_the_format_checks(shapes, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = _predict([shapes / "images", "--weights", checkpoint, "--out", out, "--mode", "panoptic", "--no-overlay"])
    assert result.exit_code == 0, result.output
    data = io.read_json(out / "panoptic.json")
    space = card_label_space(read_card(checkpoint))
    assert data["categories"] and all({"id", "name", "isthing", "color"} <= set(c) for c in data["categories"])
    assert [c["id"] for c in data["categories"]] == space.category_ids
    assert [a["image_id"] for a in data["annotations"]] == [p.stem for p in _images(shapes)]
    for ann in data["annotations"]:
        ids = io.read_panoptic_png(out / "panoptic" / ann["file_name"])
        present = dict(zip(*np.unique(ids, return_counts=True)))
        present.pop(0, None)
        infos = {s["id"]: s for s in ann["segments_info"]}
        assert set(infos) == set(present)  # every id of the PNG in segments_info and vice versa
        for segment_id, info in infos.items():
            assert info["area"] == present[segment_id] and info["iscrowd"] == 0
            assert info["bbox"] == list(mask_to_xywh(ids == segment_id)) and info["category_id"] in space.category_ids
            assert ("score" in info) == space.isthing[space.index_of_category(info["category_id"])]
    assert pq_compute(out / "panoptic.json", out / "panoptic.json")["pq"] == 1.0  # panopticapi's checks, against itself


def test_outputs_score_with_eval_against_the_datasets_ground_truth(shapes, checkpoint, tmp_path):
    """The val split's paths on stdin; eval matches predict's stems to the ground truth's file names."""
    val = [str(shapes / "images" / f"{stem}.png") for stem in (shapes / "splits" / "val.txt").read_text().split()]
    for mode in ("instance", "panoptic"):
        result = _predict(["-", "--weights", checkpoint, "--out", tmp_path / mode, "--mode", mode],
                          stdin="\n".join(val) + "\n")
        assert result.exit_code == 0, result.output
    annotations = shapes / "annotations"
    instance = evaluate_instance(annotations / "instances_val.json", tmp_path / "instance" / "instances.json")
    panoptic = evaluate_panoptic(annotations / "panoptic_val.json", tmp_path / "panoptic" / "panoptic.json")
    assert panoptic["images"] == len(val) == 2
    # predict's files scored by eval equal the same model scored in memory on the same split: nothing is lost
    # or mismatched between the PNGs/json and the metrics (a range check could not tell).
    from segcli.services.evaluate import evaluate_model

    in_memory = evaluate_model(shapes, "panoptic", weights=checkpoint, device="cpu")
    assert panoptic["pq"] == pytest.approx(in_memory["pq"], abs=1e-6)
    in_memory = evaluate_model(shapes, "instance", weights=checkpoint, device="cpu")
    assert instance["ap"] == pytest.approx(in_memory["ap"], abs=1e-6)
    # This briefly trained model scores near 0, so AP must also be seen to move: the ground truth as results
    # scores 1, and every other one of them alone finds only part of the objects.
    gt = io.read_json(shapes / "annotations" / "instances_val.json")
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 1.0} for a in gt["annotations"]]
    for results, expected in ((perfect, 1.0), (perfect[::2], None)):
        io.write_json(tmp_path / "results.json", results)
        ap = evaluate_instance(shapes / "annotations" / "instances_val.json", tmp_path / "results.json")["ap"]
        assert ap == pytest.approx(expected) if expected else 0.2 < ap < 0.9


# ---------------------------------------------------------------- inputs


@pytest.fixture
def nested(shapes, tmp_path) -> Path:
    """top/ with two images and top/sub/ with one more."""
    images = _images(shapes)
    (tmp_path / "top" / "sub").mkdir(parents=True)
    for image, where in zip(images[:3], ("top", "top", "top/sub")):
        shutil.copy(image, tmp_path / where / image.name)
    return tmp_path / "top"


@pytest.mark.parametrize("kind", ["file", "folder", "recursive", "glob", "globstar", "stdin"])
def test_every_input_kind(kind, nested, checkpoint, tmp_path):
    top = sorted(nested.glob("*.png"))
    sub = sorted(nested.glob("sub/*.png"))
    args, stdin, expected = {
        "file": ([top[0], sub[0]], None, [top[0], sub[0]]),
        "folder": ([nested], None, top),
        "recursive": ([nested, "--recursive"], None, sorted(top + sub)),
        "glob": ([f"{nested}/*/*.png"], None, sub),
        # `**` is any depth, as in bash's globstar, without -r (before: one level only, the top images alone).
        "globstar": ([f"{nested}/**/*.png"], None, sorted(top + sub)),
        "stdin": (["-"], f"{sub[0]}\n\n{top[1]}\n", [sub[0], top[1]]),
    }[kind]
    result = _predict([*args, "--weights", checkpoint, "--out", tmp_path / "out", "--json", "--no-overlay"],
                      stdin=stdin)
    assert result.exit_code == 0, result.output
    assert [Path(line["input"]) for line in _lines(result)] == expected
    assert sorted(p.name for p in (tmp_path / "out" / "semantic").iterdir()) == sorted(p.name for p in expected)


def test_no_input_matched_is_a_usage_error(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, stdin in (([tmp_path / "empty"], None), ([f"{tmp_path}/*.png"], None), (["-"], "\n")):
        result = _predict([*args, "--weights", checkpoint, "--out", tmp_path / "out"], stdin=stdin)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_same_stem_in_two_folders_never_overwrites(shapes, checkpoint, tmp_path):
    image = _images(shapes)[0]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / "photo.png")
    outputs = {}
    for order in (["a", "b"], ["b", "a"]):
        result = _predict([*(tmp_path / f / "photo.png" for f in order), "--weights", checkpoint,
                           "--out", tmp_path / "out", "--json", "--no-overlay", "--overwrite"])
        assert result.exit_code == 0, result.output
        for line in _lines(result):
            outputs.setdefault(line["input"], set()).add(line["outputs"]["semantic"])
    assert all(len(paths) == 1 for paths in outputs.values())  # the same name whatever the order
    names = [next(iter(paths)) for paths in outputs.values()]
    assert len(set(names)) == 2 and all(Path(n).stem.startswith("photo-") and Path(n).exists() for n in names)


# ---------------------------------------------------------------- failures and exit codes


def test_a_corrupt_file_fails_alone_with_exit_1(shapes, checkpoint, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for image in _images(shapes)[:2]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = _predict([folder, tmp_path / "missing.png", "--weights", checkpoint, "--out", tmp_path / "out", "--json"])
    assert result.exit_code == 1
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 2 and "broken.jpg" in failures[0] and "missing.png" in failures[1]
    assert "Traceback" not in result.output
    lines = {Path(line["input"]).name: line for line in _lines(result)}
    assert not lines["broken.jpg"]["ok"] and "broken.jpg" in lines["broken.jpg"]["error"]
    assert not lines["missing.png"]["ok"] and "no such file" in lines["missing.png"]["error"]
    written = sorted(p.name for p in (tmp_path / "out" / "semantic").iterdir())
    assert written == sorted(p.name for p in _images(shapes)[:2])


def test_fail_fast_stops_at_the_first_failure(shapes, checkpoint, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    images = _images(shapes)
    result = _predict([images[0], broken, *images[1:], "--weights", checkpoint, "--out", tmp_path / "out", "--json",
                       "--fail-fast", "--batch-size", "1"])
    assert result.exit_code == 1
    assert [line["ok"] for line in _lines(result)] == [True, False]
    assert [p.name for p in (tmp_path / "out" / "semantic").iterdir()] == [images[0].name]


@pytest.mark.parametrize("args, message", [
    (["--model", "no_such_model"], "unknown model 'no_such_model'"),
    (["--model", "unet", "--mode", "panoptic"], "unet cannot do --mode panoptic"),
    (["--shard", "2/2"], "--shard 2/2"),
    (["--shard", "half"], "write I/N"),
    (["--half"], "--half"),
    (["--half", "--bf16"], "choose one precision"),
    (["--tile", "-1"], "--tile -1"),
])
def test_refusals_are_one_line_and_exit_2(args, message, shapes, checkpoint, tmp_path):
    weights = [] if "--model" in args else ["--weights", checkpoint]
    result = _predict([shapes / "images", *weights, *args, "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- resume and shards


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_skip_existing_resumes_an_interrupted_run(shapes, checkpoint, tmp_path):
    images, out = _images(shapes), tmp_path / "out"
    common = ["--weights", checkpoint, "--mode", "instance", "--no-overlay"]
    assert _predict([*images[:4], *common, "--out", out]).exit_code == 0  # the run "killed" half way
    # Killed between an image's files and its part: that image is not done and is predicted again.
    redo = images[3].stem
    (out / ".parts" / "instance" / f"{redo}.json").unlink()
    before = _mtimes(out / "instance")
    os.utime(out / "instance" / f"{redo}.png", ns=(0, 0))
    resumed = _predict([shapes / "images", *common, "--out", out, "--skip-existing", "--json"])
    assert resumed.exit_code == 0, resumed.output
    skipped = {Path(line["input"]).stem for line in _lines(resumed) if line.get("skipped")}
    assert skipped == {p.stem for p in images[:3]}
    after = _mtimes(out / "instance")
    assert all(after[f"{stem}.png"] == before[f"{stem}.png"] for stem in skipped)  # not recomputed
    assert after[f"{redo}.png"] != 0
    fresh = _predict([shapes / "images", *common, "--out", tmp_path / "fresh"])
    assert fresh.exit_code == 0
    assembled = io.read_json(out / "instances.json")
    stems = {r["image_id"] for r in assembled}
    assert stems & {p.stem for p in images[:3]} and stems & {p.stem for p in images[4:]}  # both runs' images
    # As if never interrupted (scores to float precision: images were batched with other images).
    expected = io.read_json(tmp_path / "fresh" / "instances.json")
    assert [{**r, "score": None} for r in assembled] == [{**r, "score": None} for r in expected]
    assert [r["score"] for r in assembled] == pytest.approx([r["score"] for r in expected], rel=1e-5)


def test_shards_are_disjoint_stable_and_cover_everything(shapes, checkpoint, tmp_path):
    out = tmp_path / "out"
    seen = []
    for index in range(3):
        result = _predict([shapes / "images", "--weights", checkpoint, "--out", out, "--shard", f"{index}/3", "--json",
                           "--no-overlay", "--mode", "panoptic"])
        assert result.exit_code == 0, result.output
        seen.append([line["input"] for line in _lines(result)])
    assert sum(len(s) for s in seen) == len(_images(shapes))
    assert sorted(x for s in seen for x in s) == sorted(map(str, _images(shapes)))
    again = _predict([shapes / "images", "--weights", checkpoint, "--out", tmp_path / "again", "--shard", "1/3",
                      "--json"])
    assert [line["input"] for line in _lines(again)] == seen[1]
    # The last shard to finish assembles the aggregate from every shard's parts.
    assert len(io.read_json(out / "panoptic.json")["annotations"]) == len(_images(shapes))


def test_empty_shard_is_not_an_error(shapes, checkpoint, tmp_path):
    result = _predict([_images(shapes)[0], "--weights", checkpoint, "--out", tmp_path / "out", "--shard", "1/2"])
    assert result.exit_code == 0 and "0 predicted" in result.stderr


# ---------------------------------------------------------------- the service and inference options


def test_service_streams_records_in_input_order(shapes, checkpoint, tmp_path):
    """More inputs than the run keeps outstanding (4 batches), in batches that do not divide them."""
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(15):
        shutil.copy(_images(shapes)[number % 8], folder / f"img{number:02d}.png")
    events = []
    config = PredictConfig(inputs=[str(folder)], weights=checkpoint, out=tmp_path / "out", mode="panoptic",
                           device="cpu", batch_size=3, overlay=False)
    summary = predict(config, callback=lambda event, **info: events.append((event, info)))
    assert summary.predicted == summary.inputs == 15 and not summary.failed
    assert summary.aggregates == [tmp_path / "out" / "categories.json", tmp_path / "out" / "panoptic.json"]
    images = [info for event, info in events[1:] if event != "warning"]  # (a note on the objects' size may end the run)
    assert events[0][0] == "start" and [e for e, _ in events[1:] if e != "warning"] == ["image"] * 15
    assert [Path(info["record"]["input"]).name for info in images] == sorted(p.name for p in folder.iterdir())
    assert [j.stem for j in plan_jobs(config)] == [f"img{number:02d}" for number in range(15)]


def test_outputs_have_the_usual_file_permissions(shapes, checkpoint, tmp_path):
    result = _predict([_images(shapes)[0], "--weights", checkpoint, "--out", tmp_path / "out"])
    assert result.exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path  # not mkstemp's owner-only 0600


def test_tiling_tta_bf16_and_batch_size_reach_inference_and_agree_with_plain(shapes, checkpoint, tmp_path, monkeypatch):
    """Each option arrives in the inference options (a spy on predict_arrays), batches really hold two images,
    and the tiled, flipped, bfloat16 prediction still agrees with the plain one."""
    from segcli.services import predict as service

    calls = []
    real = service.predict_arrays

    def spy(net, card, images, device, options):
        calls.append((len(images), options))
        return real(net, card, images, device, options)

    monkeypatch.setattr(service, "predict_arrays", spy)
    images = _images(shapes)[:2]
    plain = _predict([*images, "--weights", checkpoint, "--out", tmp_path / "plain", "--no-overlay"])
    assert plain.exit_code == 0, plain.output
    assert [n for n, _ in calls] == [1, 1]
    default = calls[0][1]
    assert default.tile == 1024 and not default.tta and default.dtype == torch.float32 and default.batch_size == 1
    calls.clear()
    options = ["--tile", "32", "--overlap", "0.5", "--tta", "--bf16", "--batch-size", "2"]
    tiled = _predict([*images, "--weights", checkpoint, "--out", tmp_path / "tiled", "--no-overlay", *options])
    assert tiled.exit_code == 0, tiled.output
    ((count, used),) = calls
    assert count == 2 and used.batch_size == 2
    assert (used.tile, used.overlap, used.tta, used.dtype) == (32, 0.5, True, torch.bfloat16)
    for image in images:
        a = io.read_label_png(tmp_path / "plain" / "semantic" / image.name)
        b = io.read_label_png(tmp_path / "tiled" / "semantic" / image.name)
        assert a.shape == b.shape == (48, 48) and (a == b).mean() > 0.8


def test_tta_is_refused_for_a_detector(shapes, tmp_path):
    space = synth_label_space("shapes")
    args = {"num_classes": space.num_classes, "width": 8, "thing_classes": space.thing_indices}
    weights = save_checkpoint(tmp_path / "maskrcnn", build_model("maskrcnn_small", **args),
                              make_card("maskrcnn_small", args, "instance", space))
    result = _predict([_images(shapes)[0], "--weights", weights, "--mode", "instance", "--tta",
                       "--out", tmp_path / "out"])
    assert result.exit_code == 2 and "--tta" in result.stderr
    from segcli.errors import UsageError
    from segcli.services.evaluate import evaluate_model

    with pytest.raises(UsageError, match="--tta: flip averaging"):  # eval --data --tta refuses it the same way
        evaluate_model(shapes, "instance", weights=weights, device="cpu", tta=True)
    result = _predict([_images(shapes)[0], "--weights", weights, "--mode", "panoptic", "--bf16", "--tile", "32",
                       "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert io.read_panoptic_png(tmp_path / "out" / "panoptic" / _images(shapes)[0].name).shape == (48, 48)


def test_onnxruntime_backend_agrees_with_torch(shapes, checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    images = _images(shapes)[:2]
    for backend in ("torch", "onnxruntime"):
        result = _predict([*images, "--weights", checkpoint, "--mode", "panoptic", "--out", tmp_path / backend,
                           "--backend", backend, "--tile", "32", "--no-overlay"])  # tiled: padding and blending too
        assert result.exit_code == 0, result.output
    for image in images:
        a = io.read_label_png(tmp_path / "torch" / "panoptic" / image.name)
        b = io.read_label_png(tmp_path / "onnxruntime" / "panoptic" / image.name)
        assert (a == b).mean() >= 0.99
    assert not list(checkpoint.parent.glob("*.onnx"))  # exported for the run only, nothing left beside the checkpoint
    refused = _predict([images[0], "--weights", checkpoint, "--out", tmp_path / "bf16", "--backend", "onnxruntime",
                        "--bf16"])
    assert refused.exit_code == 2 and "float32" in refused.output and not (tmp_path / "bf16").exists()
    unknown = _predict([images[0], "--weights", checkpoint, "--out", tmp_path / "x", "--backend", "tvm"])
    assert unknown.exit_code == 2 and "torch, onnxruntime" in unknown.output


def test_a_bundled_model_takes_the_onnxruntime_backend(shapes, tmp_path):
    # Before: `--model shapes --backend onnxruntime` was refused ("give --weights") while its file worked.
    pytest.importorskip("onnxruntime")
    from segcli.services.resolve import bundled_checkpoint

    images = _images(shapes)[:2]
    for backend in ("torch", "onnxruntime"):
        result = _predict([*images, "--model", "shapes", "--mode", "panoptic", "--out", tmp_path / backend,
                           "--backend", backend, "--no-overlay"])
        assert result.exit_code == 0, result.output
    for image in images:
        a = io.read_label_png(tmp_path / "torch" / "panoptic" / image.name)
        b = io.read_label_png(tmp_path / "onnxruntime" / "panoptic" / image.name)
        assert (a == b).mean() >= 0.99
    assert not list(bundled_checkpoint("shapes").parent.glob("*.onnx"))  # nothing written beside the bundled files
