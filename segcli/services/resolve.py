"""Which model answers a request: --weights FILE, --model NAME, or the bundled default for the mode."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segcli.checkpoint import load_checkpoint, make_card
from segcli.errors import ModelError
from segcli.models import hf_zoo
from segcli.models.registry import build_model, get_model_entry, models_for_mode
from segcli.structures import LabelSpace

REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "models"


def weights_dirs() -> list[Path]:
    """Where bundled checkpoints are looked for: $SEGCLI_WEIGHTS, then the repository's models/ folder."""
    dirs = [Path(p) for p in os.environ.get("SEGCLI_WEIGHTS", "").split(os.pathsep) if p]
    return dirs + [REPO_WEIGHTS]


def default_checkpoint(mode: str) -> Path | None:
    """`<mode>-default` for the mode; a panoptic model also answers semantic and instance requests."""
    for name in (f"{mode}-default", "panoptic-default"):
        for folder in weights_dirs():
            if (folder / f"{name}.safetensors").is_file():
                return folder / f"{name}.safetensors"
    return None


def _check_mode(name: str, mode: str) -> None:
    if mode not in get_model_entry(name).modes:
        raise ModelError(f"{name} cannot do --mode {mode}; models that can: {', '.join(models_for_mode(mode))}")


def resolve_model(mode: str, model: str | None = None, weights: Path | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    if weights is not None:
        net, card = load_checkpoint(weights, device=device)
        _check_mode(card["model"], mode)
        return net, card
    if hf_zoo.is_hf_name(model):
        return hf_zoo.load(model, mode, device)
    if model is not None:
        _check_mode(model, mode)
        if not model.startswith("tv_"):
            raise ModelError(f"{model} has no pretrained weights of its own: train it (segcli train --model {model} ...) "
                             "and pass --weights runs/.../best.safetensors")
        net = build_model(model).to(device).eval()
        return net, _torchvision_card(model, net, mode)
    if mode == "panoptic" and hf_zoo.available():
        return hf_zoo.load(hf_zoo.DEFAULT_PANOPTIC, mode, device)
    found = default_checkpoint(mode)
    if found is None:
        raise ModelError(f"no bundled {mode} model here (looked for {mode}-default.safetensors in "
                         f"{', '.join(str(d) for d in weights_dirs())}); no weights ship with segcli yet: train one "
                         f"(segcli train --model unet_panoptic --mode panoptic ...) and pass --weights "
                         f"runs/.../best.safetensors, put it there as {mode}-default.safetensors, or use --model "
                         f"with a torchvision model (segcli models)" + (f"; for photos, {hf_zoo.INSTALL_HINT} gives a COCO "
                         "panoptic Mask2Former as the default" if mode == "panoptic" else ""))
    return resolve_model(mode, weights=found, device=device)


def _torchvision_card(name: str, net, mode: str) -> dict:
    names = list(net.class_names)
    things = [i > 0 and not n.startswith("__") for i, n in enumerate(names)]
    space = LabelSpace(names, isthing=things, category_ids=list(range(len(names))))
    card = make_card(name, {}, mode, space)
    card["normalization"] = {"mean": list(net.mean), "std": list(net.std)}
    return card
