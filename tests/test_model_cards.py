"""What a bundled model's card tells its users: scores per test set and kind of image (scripts/bundle_model.py),
the training data's licences, and both through `segcli models`, `models --info` and models/README.md."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segcli import io
from segcli.checkpoint import card_licences, read_card
from segcli.cli import app
from segcli.data.synth import generate
from segcli.services.resolve import bundled_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bundle_model  # noqa: E402
import models_readme  # noqa: E402

runner = CliRunner()
MONUSEG = {"name": "MoNuSeg 2018", "licence": "CC BY-NC-SA 4.0", "url": "https://monuseg.grand-challenge.org"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Synthetic shapes whose metadata.csv says half are fluorescence, half H&E (as DSB 2018's groups do)."""
    root = generate("shapes", tmp_path_factory.mktemp("cards") / "mixed", n=6, size=64, seed=2)
    stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    groups = ["fluorescence_64x64", "he_stained_64x64"]
    rows = "".join(f"{s},{groups[i % 2]}\n" for i, s in enumerate(stems))
    (root / "metadata.csv").write_text("image_id,group\n" + rows)
    return root


@pytest.fixture
def he_model(tmp_path, monkeypatch) -> str:
    """A bundled model (the shapes weights) whose card says it was trained on DSB 2018 and MoNuSeg 2018."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    card = read_card(bundled_checkpoint("shapes"))
    card["data"] = {**card["data"], "sources": [{"name": "DSB 2018", "licence": "CC0", "url": None}, MONUSEG]}
    card.pop("scores", None)
    shutil.copy(bundled_checkpoint("shapes"), folder / "he_test.safetensors")
    io.write_json(folder / "he_test.json", card)
    monkeypatch.setenv("SEGCLI_WEIGHTS", str(folder))
    return "he_test"


def test_scores_per_kind_of_image_and_the_whole_set_as_eval_scores_it(mixed):
    rows = bundle_model.score_rows(bundled_checkpoint("shapes"), f"{mixed}:all", ["instance", "panoptic"])
    assert [(r["kind"], r["n_images"]) for r in rows] == [("all", 6), ("H&E", 3), ("fluorescence", 3)]
    assert all({"ap50", "ap", "things_pq", "pq"} <= set(r) and r["test_set"] == "mixed all" for r in rows)
    result = runner.invoke(app, ["eval", "--data", str(mixed), "--split", "all", "--model", "shapes",
                                 "--mode", "instance", "--json", "-", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert rows[0]["ap50"] == pytest.approx(json.loads(result.stdout)["ap50"], abs=1e-4)  # eval reproduces the row
    assert rows[1]["ap50"] != rows[2]["ap50"]  # the kinds are scored apart


def test_an_images_kind_comes_from_the_option_the_metadata_or_the_set(mixed, tmp_path):
    names = ["a", "b"]
    assert bundle_model.image_kinds(tmp_path, names, "brightfield") == {"a": "brightfield", "b": "brightfield"}
    assert bundle_model.image_kinds(tmp_path / "tnbc_nuclei", names) == {"a": "H&E", "b": "H&E"}
    with pytest.raises(SystemExit, match="KIND"):
        bundle_model.image_kinds(tmp_path / "unknown_set", names)
    stems = sorted(p.stem for p in (mixed / "images").glob("*.png"))
    assert set(bundle_model.image_kinds(mixed, stems).values()) == {"fluorescence", "H&E"}
    assert bundle_model.parse_test_set("d/x:val:H&E") == (Path("d/x"), "val", "H&E")
    assert bundle_model.parse_test_set("d/x") == (Path("d/x"), "test", None)


def test_a_model_trained_on_monuseg_says_so_in_models_and_its_info(he_model):
    """(--info also measures the architecture: unet_panoptic's centre head once refused the float64 probe.)"""
    listed = runner.invoke(app, ["models", "--json"])
    row = next(r for r in json.loads(listed.stdout) if r["name"] == he_model)
    assert "MoNuSeg 2018: CC BY-NC-SA 4.0" in row["description"]
    assert MONUSEG["licence"] in [s["licence"] for s in row["training_data"]]
    table = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "CC BY-NC-SA 4.0" in table.output
    info = runner.invoke(app, ["models", "--info", he_model, "--size", "64", "--json"])
    facts = json.loads(info.stdout)
    assert facts["licence"] == "DSB 2018: CC0; MoNuSeg 2018: CC BY-NC-SA 4.0" and facts["bundled"]


def test_info_of_a_bundled_model_shows_its_scores_per_kind_of_image():
    info = runner.invoke(app, ["models", "--info", "nuclei", "--size", "64", "--json"])
    assert info.exit_code == 0, info.output
    facts = json.loads(info.stdout)
    assert {r["kind"] for r in facts["scores"]} >= {"fluorescence", "H&E", "brightfield"}
    assert facts["training_data"][0]["licence"] == "CC0" and facts["pixel_size_um"] is None
    assert facts["object_diameter"] == pytest.approx(20.5) and facts["parameters"] > 0
    shown = runner.invoke(app, ["models", "--info", "nuclei", "--size", "64"], env={"COLUMNS": "200"})
    assert "scores per test set and kind of image" in shown.output and "nucleus PQ" in shown.output
    assert "--object-size" in shown.output  # no pixel size: the option that rescales


def test_models_readme_lists_scores_and_says_when_the_data_is_non_commercial(he_model):
    card = read_card(bundled_checkpoint(he_model))
    assert "-NC" in card_licences(card)
    lines = models_readme.scores_section([he_model, "nuclei"])
    assert "### `nuclei`" in lines and any(line.startswith("| dsb2018_nuclei test | H&E |") for line in lines)
    assert any("No scores per kind of image recorded" in line for line in lines)  # the test model has none
