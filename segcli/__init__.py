"""segcli: semantic, instance and panoptic segmentation from the command line.

`import segcli` is light: the public functions below are imported on first use (PEP 562
module `__getattr__`), so `segcli --version` and `segcli --help` start without torch.
"""

import os

from segcli._version import __version__

# After every parallel region, libgomp's worker threads (PyTorch's CPU threads on Linux) spin before they sleep:
# GOMP_SPINCOUNT rounds, 300,000 by default, which is 5-11 ms of a core here each time the main thread turns to
# other work. That spinning takes the cores predict's reader and writer threads (and training's loader workers)
# would use: at 20,000 a pause costs 0.1-0.5 ms, and predict on a folder of 512 px images ran about 4% faster
# (bfloat16, three A/Bs) with the model's own forward pass unchanged. libgomp reads it when torch loads, so it is
# set here, before any segcli module imports torch; a value the user set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

# name -> module that defines it
_LAZY = {
    "build_model": "segcli.models.registry",
    "list_models": "segcli.models.registry",
    "PredictConfig": "segcli.services.predict",
    "predict": "segcli.services.predict",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'segcli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
