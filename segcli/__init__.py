"""segcli: semantic, instance and panoptic segmentation from the command line.

`import segcli` is light: the public functions below are imported on first use (PEP 562
module `__getattr__`), so `segcli --version` and `segcli --help` start without torch.
"""

from segcli._version import __version__

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
