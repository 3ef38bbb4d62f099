"""The one place that turns a library's weights into a local file: cache, download, offline refusal.

torchvision's weights (`torchvision.models.get_model_weights(name).DEFAULT`: URL, `meta`,
`transforms()`) are cached exactly where torchvision caches them, `torch.hub.get_dir()/checkpoints`
(`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`), under the file name of
their URL. That name carries the first hex digits of the file's SHA-256
(`resnet18-f37072fd.pth`, torch.hub's `check_hash` convention): a download is checked against it
before it is moved into the cache (torch.hub downloads to a `.partial` file first, so an
interrupted or corrupt download never lands), and a cached file is checked before it is used.

`--offline` (the CLI) and `SEGCLI_OFFLINE=1` forbid every download: `fetch` refuses before any
network call, naming the file and where to put it. Builders never download: they read
`cached_file`, and the services call `fetch` first (`segcli.services.resolve`).
"""

from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path

from segcli.errors import ModelError

OFFLINE_ENV = "SEGCLI_OFFLINE"
HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX


class OfflineError(ModelError):
    """Weights are needed that are not on this machine, and downloading is forbidden."""


def is_offline() -> bool:
    """True when downloads are forbidden: `--offline` on the command line or SEGCLI_OFFLINE=1."""
    return os.environ.get(OFFLINE_ENV, "") == "1"


def set_offline() -> None:
    """What `--offline` does: forbid downloads for this process and everything it starts."""
    os.environ[OFFLINE_ENV] = "1"


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether `url`'s server answers at all (any HTTP status will do), in one request without retries: a client
    that retries each file (huggingface_hub) spent half a minute finding out that there is no network."""
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the server answered, if only with an error status
    except (OSError, ValueError):  # URLError (no DNS, refused, unreachable), timeouts, a malformed endpoint
        return False
    return True


def cache_dir() -> Path:
    """torch hub's checkpoint cache (honours TORCH_HOME and torch.hub.set_dir)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights(name: str):
    """torchvision's default weights of its model `name` (a WeightsEnum member: .url, .meta, .transforms())."""
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise ModelError(f"torchvision has no pretrained weights named {name!r}") from None


def file_name(weights) -> str:
    return os.path.basename(weights.url)


def cache_path(weights) -> Path:
    """Where `weights` (anything with a .url) live once fetched."""
    return cache_dir() / file_name(weights)


def size_mb(weights) -> float | None:
    """The published download size in MB (torchvision's meta["_file_size"]), when known."""
    return getattr(weights, "meta", {}).get("_file_size")


def _hash_prefix(name: str) -> str | None:
    match = HASH_IN_NAME.search(name)
    return match.group(1) if match and match.group(1) else None


def _check_cached(path: Path) -> None:
    """A cached file whose SHA-256 disagrees with its name is removed (the next online run fetches it again)."""
    prefix = _hash_prefix(path.name)
    if prefix is None:
        return
    from segcli.io import file_sha256

    digest = file_sha256(path)
    if not digest.startswith(prefix):
        path.unlink(missing_ok=True)
        raise ModelError(f"{path}: SHA-256 {digest[:12]}... does not match the {prefix} in its name: the "
                         "file was corrupt and has been removed; fetch it again (segcli models --fetch NAME)")


def cached_file(weights, *, model: str | None = None) -> Path:
    """The local file of `weights`, hash-checked; never downloads (what builders call)."""
    path = cache_path(weights)
    if not path.is_file():
        what = f" ({model})" if model else ""
        raise ModelError(f"pretrained weights {path.name}{what} are not on this machine: "
                         f"`segcli models --fetch {model or path.name}` downloads {weights.url} to {path} "
                         "(or pass --weights FILE)")
    _check_cached(path)
    return path


def fetch(weights, *, model: str | None = None, progress: bool = True) -> Path:
    """The local file of `weights`, downloaded into the cache on first use (progress bar on stderr).

    Refused before any network access when offline. A download whose SHA-256 does not start with the
    prefix in its file name is refused and leaves nothing in the cache.
    """
    path = cache_path(weights)
    if path.is_file():
        return cached_file(weights, model=model)
    what = f" for {model}" if model else ""
    if is_offline():
        raise OfflineError(f"offline: {path.name}{what} is not in {path.parent}; download {weights.url} where there is "
                           f"a network (`segcli models --fetch {model or path.name}`) and put it in {path.parent}/ "
                           "(the folder of $TORCH_HOME/hub/checkpoints)")
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # torch.hub's own download: a .partial file beside the target, hash-checked, then moved into place.
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=_hash_prefix(path.name), progress=progress)
    except RuntimeError as error:  # "invalid hash value"
        raise ModelError(f"downloaded {weights.url}{what} but it is corrupt ({error}); nothing was kept in "
                         f"{path.parent}: try again") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ModelError(f"could not download {weights.url}{what} ({reason}); fetch it where there is a network "
                         f"and put it in {path.parent}/, or pass --weights FILE") from None
    return path

