"""A predict --out folder holds the results of one configuration, and its json files list exactly the images
whose files are there: after a rerun, a resume, shards, an --overwrite and an interrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app
from segcli.data.synth import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    data = generate("shapes", tmp_path_factory.mktemp("out_folder") / "shapes", n=6, size=48, seed=3)
    return sorted((data / "images").glob("*.png"))


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu", "--no-overlay"])


def _shapes(out: Path, *inputs, mode: str = "panoptic", **options: str):
    """predict with the bundled shapes model; options as keywords (skip_existing="" for a flag)."""
    extra = [part for key, value in options.items() for part in (f"--{key.replace('_', '-')}", value) if part != ""]
    return _predict(*inputs, "--model", "shapes", "--mode", mode, "--out", out, *extra)


def _state(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _agrees(out: Path, mode: str = "panoptic") -> set[str]:
    """The stems of the mode's PNGs, checked to be exactly those its json and its parts list."""
    pngs = {p.stem for p in (out / mode).glob("*.png")}
    parts = {p.stem for p in (out / ".parts" / mode).glob("*.json")}
    if mode == "panoptic":
        listed = {a["image_id"] for a in io.read_json(out / "panoptic.json")["annotations"]}
    else:
        listed = {r["image_id"] for r in io.read_json(out / "instances.json")}
        listed |= {stem for stem in pngs if not io.read_label_png(out / mode / f"{stem}.png").any()}  # no objects
    assert pngs == parts == listed, (pngs, parts, listed)
    return pngs


def _one_line_refusal(result, *named: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in named), result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_another_model_is_refused_before_any_work_even_with_skip_existing(images, tmp_path):
    """The issue's case: parts of `shapes` kept beside `nuclei`'s categories, and visualize failing on it."""
    out = tmp_path / "out"
    assert _shapes(out, *images).exit_code == 0
    before = _state(out)
    result = _predict(*images, "--model", "nuclei", "--mode", "panoptic", "--out", out, "--skip-existing")
    _one_line_refusal(result, "model shapes", "model nuclei", "--overwrite")
    assert _state(out) == before  # nothing written, nothing removed
    shown = runner.invoke(app, ["visualize", *map(str, images), "--pred", str(out), "--out", str(tmp_path / "v")])
    assert shown.exit_code == 0, shown.output


@pytest.mark.parametrize("args, named", [
    (["--mode", "instance"], "--mode panoptic; this run has --mode instance"),
    (["--stuff-area", "10"], "--stuff-area 64; this run has --stuff-area 10"),
    (["--center-threshold", "0.3"], "--center-threshold"),
    (["--tile", "64"], "--tile 1024; this run has --tile 64"),
    (["--tta"], "--tta off; this run has --tta on"),
    (["--overlap", "0.5"], "--overlap 0.25; this run has --overlap 0.5"),
])
def test_the_first_setting_that_differs_is_named(images, tmp_path, args, named):
    out = tmp_path / "out"
    assert _shapes(out, *images[:2]).exit_code == 0
    before = _state(out)
    mode = ["--mode", "panoptic"] if "--mode" not in args else []
    for resume in ([], ["--skip-existing"], ["--shard", "0/2"]):
        result = _predict(*images, "--model", "shapes", *mode, "--out", out, *args, *resume)
        _one_line_refusal(result, named)
    assert _state(out) == before


def test_other_weights_of_the_same_model_are_refused(images, tiny_checkpoint, tmp_path):
    from segcli.checkpoint import load_checkpoint, save_checkpoint

    net, card = load_checkpoint(tiny_checkpoint)
    next(net.parameters()).data.add_(1.0)
    other = save_checkpoint(tmp_path / "other" / "tiny", net, card)
    out = tmp_path / "out"
    assert _predict(*images, "--weights", tiny_checkpoint, "--out", out).exit_code == 0
    assert _predict(*images, "--weights", tiny_checkpoint, "--out", out, "--skip-existing").exit_code == 0
    result = _predict(*images, "--weights", other, "--out", out, "--skip-existing")
    _one_line_refusal(result, "weights sha256:", "this run has weights sha256:")


def test_a_rerun_is_refused_without_skip_existing_or_overwrite(images, tmp_path):
    out = tmp_path / "out"
    assert _shapes(out, *images[:3]).exit_code == 0
    _one_line_refusal(_shapes(out, *images), "--skip-existing", "--overwrite")
    _one_line_refusal(_predict(images[0], "--model", "shapes", "--out", out, "--skip-existing", "--overwrite"),
                      "choose one")
    resumed = _shapes(out, *images, skip_existing="")
    assert resumed.exit_code == 0 and "3 predicted, 3 skipped" in resumed.stderr, resumed.output


def test_the_json_lists_every_image_the_folder_holds(images, tmp_path):
    """A resume over other inputs keeps the earlier images (same settings): the json lists them all, and only them."""
    out = tmp_path / "out"
    for mode in ("panoptic", "instance"):
        assert _shapes(out / mode, *images[:2], mode=mode).exit_code == 0
        assert _shapes(out / mode, *images[3:], mode=mode, skip_existing="").exit_code == 0
        assert _agrees(out / mode, mode) == {p.stem for p in [*images[:2], *images[3:]]}


def test_overwrite_starts_over_and_leaves_other_files(images, tmp_path):
    out = tmp_path / "out"
    assert _shapes(out, *images).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = _predict(*images[:2], "--model", "nuclei", "--mode", "panoptic", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert _agrees(out) == {p.stem for p in images[:2]}  # none of the first run's images is left
    assert {c["name"] for c in io.read_json(out / "categories.json")["categories"]} == {"background", "nucleus"}
    assert io.read_json(out / ".parts" / "run.json")["settings"]["model"] == "nuclei"
    assert (out / "notes.txt").read_text() == "mine"


def test_a_folder_segcli_did_not_write(images, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line_refusal(_shapes(out, images[0]), "not empty", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert _shapes(out, images[0], overwrite="").exit_code == 0  # asked to write beside its files
    assert (out / "notes.txt").read_text() == "mine" and _agrees(out) == {images[0].stem}
    theirs = tmp_path / "theirs"
    (theirs / "panoptic").mkdir(parents=True)
    io.write_image(theirs / "panoptic" / "x.png", io.read_image(images[0]))
    for flag in ("--overwrite", "--skip-existing"):
        result = _predict(images[0], "--model", "shapes", "--mode", "panoptic", "--out", theirs, flag)
        _one_line_refusal(result, str(theirs / "panoptic"), "did not write")
    assert sorted(p.name for p in theirs.rglob("*")) == ["panoptic", "x.png"]


def test_a_folder_of_an_earlier_segcli_without_settings(images, tmp_path):
    out = tmp_path / "out"
    assert _shapes(out, *images[:2]).exit_code == 0
    (out / ".parts" / "run.json").unlink()
    for part in (out / ".parts" / "panoptic").glob("*.json"):
        io.write_json(part, {k: v for k, v in io.read_json(part).items() if k != "settings"})
    _one_line_refusal(_shapes(out, *images, skip_existing=""), "did not record their settings", "--overwrite")
    assert _shapes(out, *images, overwrite="").exit_code == 0 and len(_agrees(out)) == len(images)


def test_the_shard_recipe_assembles_what_one_run_writes(images, tmp_path):
    """README: shards into one --out (no --skip-existing: they share the folder by design), then one
    --skip-existing run without --shard writes the json files of all, predicting nothing again."""
    out = tmp_path / "out"
    for index in range(3):
        result = _shapes(out, images[0].parent, shard=f"{index}/3")
        assert result.exit_code == 0, result.output
    assembled = _shapes(out, images[0].parent, skip_existing="")
    assert assembled.exit_code == 0 and f"0 predicted, {len(images)} skipped" in assembled.stderr, assembled.output
    assert _shapes(tmp_path / "one", images[0].parent).exit_code == 0
    strip = lambda data: json.loads(json.dumps(data).replace(str(out), "").replace(str(tmp_path / "one"), ""))  # noqa: E731
    assert strip(io.read_json(out / "panoptic.json")) == strip(io.read_json(tmp_path / "one" / "panoptic.json"))
    _one_line_refusal(_shapes(out, images[0].parent, shard="1/3", stuff_area="5"), "--stuff-area")


def test_an_interrupted_run_leaves_json_files_that_agree_with_its_pngs(images, tmp_path, monkeypatch):
    from segcli.services import predict as service

    real, calls = service.predict_arrays, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "predict_arrays", interrupted)
    out = tmp_path / "out"
    result = _shapes(out, *images)
    assert result.exit_code == 130, result.output
    assert 0 < len(_agrees(out)) < len(images)  # the images done before Ctrl-C, listed in panoptic.json
    monkeypatch.setattr(service, "predict_arrays", real)
    assert _shapes(out, *images, skip_existing="").exit_code == 0 and len(_agrees(out)) == len(images)
