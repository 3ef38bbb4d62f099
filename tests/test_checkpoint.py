from __future__ import annotations

import json

import pytest
import torch

from segcli.checkpoint import (
    card_label_space,
    load_checkpoint,
    load_training_state,
    make_card,
    save_checkpoint,
    save_training_state,
)
from segcli.errors import ModelError
from segcli.models.registry import build_model
from segcli.structures import LabelSpace


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", num_classes=3, width=4, depth=2).eval()
    space = LabelSpace(["bg", "a", "b"], isthing=[False, True, True])
    card = make_card("unet", {"num_classes": 3, "width": 4, "depth": 2}, "semantic", space, img_size=64)
    weights = save_checkpoint(tmp_path / "best", model, card)
    assert weights.name == "best.safetensors" and (tmp_path / "best.json").is_file()
    for path in (tmp_path / "best", weights, tmp_path / "best.json"):
        loaded, loaded_card = load_checkpoint(path)
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x)["semantic"], model(x)["semantic"])
    assert card_label_space(loaded_card).names == ["bg", "a", "b"] and loaded_card["img_size"] == 64


def test_clear_errors_for_broken_checkpoints(tmp_path):
    model = build_model("fullres", num_classes=2, width=4, depth=2)
    card = make_card("fullres", {"num_classes": 2, "width": 4, "depth": 2}, "semantic", LabelSpace(["a", "b"]))
    save_checkpoint(tmp_path / "m", model, card)
    with pytest.raises(ModelError, match="no such file"):  # neither weights nor card: said as such
        load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "other.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes())
    with pytest.raises(ModelError, match="card missing"):
        load_checkpoint(tmp_path / "other.safetensors")
    card["model_args"]["width"] = 8
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(tmp_path / "m")


def test_training_state_round_trip_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": 7, "best": None}
    save_training_state(tmp_path / "last", state)
    loaded = load_training_state(tmp_path / "last")
    assert loaded["step"] == 7 and loaded["best"] is None and torch.equal(loaded["rng"], state["rng"])
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.1
    assert torch.equal(fresh.state[fresh.param_groups[0]["params"][0]]["exp_avg"],
                       optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"])
