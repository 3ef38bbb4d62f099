"""`hf:` models: Hugging Face checkpoints by repository or folder, and the zoo's Mask2Former entries.

`--model hf:ORG/NAME` opens a checkpoint of the Hugging Face Hub, `--model hf:DIR` a folder written
by `save_pretrained` (config.json, the weights and preprocessor_config.json). Files come from
transformers' own `from_pretrained`, so they land in the Hugging Face cache ($HF_HOME/hub, by
default ~/.cache/huggingface/hub) with huggingface_hub's download bars on stderr. A checkpoint already
there is read from it without a request to the Hub and without transformers' "Loading weights" bar.
Offline (`--offline`, SEGCLI_OFFLINE=1) it reads the cache only (`local_files_only`) and a missing
file is one clear error.

Class names come from the checkpoint's `config.id2label`. COCO json category ids and thing flags
come from the config when it has `category_ids` / `isthing` lists (index order), else from the label
names when every one of them is a COCO panoptic category (segcli.models.hf_coco), else ids are
index + 1 and every class is a thing (each query its own segment), except for checkpoints that only
do semantic segmentation, whose classes are stuff.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segcli.errors import ModelError
from segcli.structures import LabelSpace, default_palette

PREFIX = "hf:"
INSTALL_HINT = "pip install 'segcli[hf]'"
MODES = ("semantic", "instance", "panoptic")
SUPPORTED = ("mask2former", "maskformer")  # model types whose processor and outputs this adapter knows


@dataclass(frozen=True)
class HFCheckpoint:
    """A published checkpoint the zoo names: what it predicts, what it costs, how good it was reported to be."""

    repo: str
    modes: tuple[str, ...]
    classes: str
    download_mb: int  # float32 weights: 47 M parameters (Swin-T Mask2Former, as published) x 4 bytes
    metric: str  # as published by the authors (Mask2Former MODEL_ZOO.md), measured with their detectron2 pipeline

    @property
    def name(self) -> str:
        return PREFIX + self.repo

    @property
    def description(self) -> str:
        return f"Mask2Former Swin-T, {self.classes}; {self.metric}; ~{self.download_mb} MB download (needs segcli[hf])"


# Source of the metrics: github.com/facebookresearch/Mask2Former MODEL_ZOO.md (Swin-T rows), single-scale.
ZOO = {c.name: c for c in (
    HFCheckpoint("facebook/mask2former-swin-tiny-coco-panoptic", MODES,
                 "COCO panoptic: 80 things + 53 stuff", 190, "COCO val PQ 53.2"),
    HFCheckpoint("facebook/mask2former-swin-tiny-coco-instance", ("instance",),
                 "COCO: 80 things", 190, "COCO val mask AP 45.0"),
    HFCheckpoint("facebook/mask2former-swin-tiny-ade-semantic", ("semantic",),
                 "ADE20K: 150 classes", 190, "ADE20K val mIoU 47.7"),
)}
DEFAULT_PANOPTIC = "hf:facebook/mask2former-swin-tiny-coco-panoptic"


def is_hf_name(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def available() -> bool:
    """transformers and scipy (Mask2Former's modules import it even for inference) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "scipy"))


def _offline() -> bool:
    from segcli.hub import is_offline

    return is_offline()


def _reference(name: str) -> tuple[str, bool]:
    """hf:ORG/NAME or hf:DIR -> (what from_pretrained takes, is it a local folder)."""
    ref = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not ref:
        raise ModelError(f"--model {name}: name a checkpoint, e.g. {DEFAULT_PANOPTIC} or hf:path/to/folder")
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return str(folder), True
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise ModelError(f"--model {name}: no such folder, and not a Hub repository name (ORG/NAME)")
    return ref, False


def modes_of(name: str) -> tuple[str, ...]:
    """The zoo's modes for its checkpoints; for others what the name says (…-panoptic, -instance, -semantic),
    else all."""
    if name in ZOO:
        return ZOO[name].modes
    lowered = name.lower()
    for mode in ("instance", "semantic"):
        if mode in lowered and "panoptic" not in lowered:
            return (mode,)
    return MODES


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _not_cached(name: str, why: str = "offline") -> ModelError:
    from segcli.hub import OfflineError

    return OfflineError(f"{why}: {name} is not in the Hugging Face cache ({cache_dir()}); run `segcli models --fetch "
                        f"{name}` on a machine with network and copy its cache folder here (or point HF_HOME at it)")


def _check_hub_reachable(name: str) -> None:
    """Without a network, fail at once with the offline line (huggingface_hub retried each file for 30 s)."""
    from huggingface_hub import constants

    from segcli.hub import reachable

    if not reachable(constants.ENDPOINT):
        raise _not_cached(name, f"offline ({constants.ENDPOINT} cannot be reached)")


def _missing(name: str, ref: str, local: bool, error: Exception) -> ModelError:
    if local:
        return ModelError(f"--model {name}: {ref} is not a transformers checkpoint folder "
                          f"(config.json, weights and preprocessor_config.json from save_pretrained): {error}")
    if _offline():
        return _not_cached(name)
    return ModelError(f"could not get {name} from the Hugging Face Hub ({str(error).splitlines()[0]}); check the name "
                      f"and the network, or fetch it elsewhere (`segcli models --fetch {name}`) and copy {cache_dir()}")


@contextmanager
def _download_bars(shown: bool):
    """huggingface_hub's download bars on stderr, or none (`--quiet`); restored afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not shown:
        disable_progress_bars()
    try:
        yield
    finally:
        if not shown and not was_disabled:
            enable_progress_bars()


@contextmanager
def _no_loading_bar():
    """transformers 5 draws a "Loading weights" bar each time a model is built from files already on disk: not a
    download, so segcli does not show it. Downloads keep huggingface_hub's own bars (another tqdm, not hooked)."""
    from transformers.utils import logging

    if not hasattr(logging, "set_tqdm_hook"):  # transformers 4 draws no such bar for one-file checkpoints
        yield
        return
    previous = logging.set_tqdm_hook(lambda factory, args, kwargs: logging.EmptyTqdm(*args, **kwargs))
    try:
        yield
    finally:
        logging.set_tqdm_hook(previous)


def load_files(name: str, *, progress: bool = True):
    """(processor, network) of an hf: name; downloads into the Hugging Face cache unless offline."""
    if not available():
        raise ModelError(f"--model {name} needs transformers and scipy: {INSTALL_HINT}")
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForUniversalSegmentation

    ref, local = _reference(name)
    # A checkpoint already in the cache is read from it, as torch hub's files are: no request to the Hub (without a
    # network, huggingface_hub would retry each file for half a minute before falling back to the cache).
    options = {"local_files_only": local or _offline() or is_cached(name)}
    if not options["local_files_only"]:
        _check_hub_reachable(name)
    try:
        with _download_bars(progress), _no_loading_bar():
            config = AutoConfig.from_pretrained(ref, **options)
            if config.model_type not in SUPPORTED:
                raise ModelError(f"--model {name}: a {config.model_type} checkpoint; segcli opens "
                                 f"{', '.join(SUPPORTED)} ones")
            processor = AutoImageProcessor.from_pretrained(ref, **options)
            net = AutoModelForUniversalSegmentation.from_pretrained(ref, **options)
    except OSError as error:  # transformers' "can't load" errors, and huggingface_hub's missing-file errors
        raise _missing(name, ref, local, error) from None
    return processor, net.eval()


def label_space(config, modes: tuple[str, ...]) -> LabelSpace:
    """Names from id2label; COCO ids and thing flags from the config, else the COCO panoptic table, else defaults."""
    from segcli.models.hf_coco import coco_ids_for

    names = [str(config.id2label[i]) for i in range(len(config.id2label))]
    category_ids, isthing = getattr(config, "category_ids", None), getattr(config, "isthing", None)
    coco = coco_ids_for(names)
    if coco is not None:
        category_ids = category_ids or coco[0]
        isthing = isthing or coco[1]
    if isthing is None:
        isthing = [modes != ("semantic",)] * len(names)
    # The VOC palette without its black: class 0 of these checkpoints is a real class (COCO's person, ADE20K's
    # wall), not background, and visualize leaves a black class 0 clear as the VOC background.
    colors = default_palette(len(names) + 1)[1:]
    return LabelSpace(names, isthing=[bool(t) for t in isthing], colors=colors, category_ids=category_ids)


def load(name: str, mode: str, device="cpu"):
    """The model of an hf: name for `mode`, in eval mode on `device` (`services.resolve` writes its card)."""
    from segcli.models.hf_mask2former import HFMask2Former

    modes = modes_of(name)
    if mode not in modes:
        raise ModelError(f"{name} cannot do --mode {mode}; it does {', '.join(modes)}")
    processor, net = load_files(name)
    return HFMask2Former(net, processor, mode, label_space(net.config, modes), modes).to(device).eval()


def facts(name: str) -> dict:
    """`segcli models --info` of an hf: checkpoint: the zoo's entry, and what its files say when they are on this
    machine (--info downloads nothing): classes, parameters, the size its processor resizes every image to."""
    checkpoint = ZOO.get(name)
    described = checkpoint.description if checkpoint else "a Hugging Face checkpoint (--model hf:ORG/NAME or hf:DIR)"
    found = {"name": name, "modes": list(modes_of(name)), "description": described}
    if not (available() and is_cached(name)):
        return found | {"weights": f"not on this machine: segcli models --fetch {name}"}
    processor, net = load_files(name)
    space = label_space(net.config, modes_of(name))
    return found | {"classes": space.num_classes, "things": len(space.thing_indices),
                    "parameters": sum(p.numel() for p in net.parameters()), "input_size": dict(processor.size)}


def fetch(name: str, *, progress: bool = True) -> Path:
    """Download an hf: checkpoint into the Hugging Face cache (what `segcli models --fetch` does): its folder there
    (a local checkpoint folder: itself, checked)."""
    load_files(name, progress=progress)
    ref, local = _reference(name)
    if local:
        return Path(ref)
    from huggingface_hub import try_to_load_from_cache

    return Path(try_to_load_from_cache(ref, "config.json")).parent


def is_cached(name: str) -> bool:
    """Config, processor config and weights of a Hub checkpoint are in the Hugging Face cache (folders: they exist)."""
    ref, local = _reference(name)
    if local:
        return True
    from huggingface_hub import try_to_load_from_cache

    def here(file: str) -> bool:
        return isinstance(try_to_load_from_cache(ref, file), str)

    return here("config.json") and here("preprocessor_config.json") and (
        here("model.safetensors") or here("pytorch_model.bin"))
