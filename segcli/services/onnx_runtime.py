"""`predict --backend onnxruntime`: a dense checkpoint's forward pass run by ONNX Runtime on the CPU.

The graph is the one `segcli export` writes (`<checkpoint>.onnx` beside the checkpoint when it is newer than the
weights, otherwise exported for this run into a temporary folder, removed once the session has read it). Everything
around the forward pass, padding to the stride, tiling, flips, resizing and post-processing, stays segcli's: the
wrapper is a `SegModel` whose forward calls the session and whose contract is the torch model's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from segcli.checkpoint import checkpoint_paths
from segcli.errors import ModelError, UsageError
from segcli.models.base import SegModel

INSTALL_HINT = "pip install 'segcli[onnx]'"


class OnnxRuntimeModel(SegModel):
    """model(images) -> dict of dense outputs, computed by an ONNX Runtime session of the exported graph; the rest of
    the contract (stride, normalisation, flips, resizing, post-processing) is the torch model's."""

    prepared = True  # prepare_model leaves it as it is: the graph is what runs

    def __init__(self, model: SegModel, path: Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        self.model = model  # not run: its post-processing, stride and flips serve the session's outputs
        self.modes, self.size_multiple, self.scalar_maps = model.modes, model.size_multiple, model.scalar_maps
        self.in_channels = model.in_channels
        self.mean, self.std, self.class_names = model.mean, model.std, model.class_names
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # ONNX Runtime's threads spin for a while after each run by default: on a CPU shared with predict's reading,
        # post-processing and writing threads (or anything after it) they take the cores those need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [output.name for output in self.session.get_outputs()]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = self.session.run(None, {"images": images.float().contiguous().numpy()})
        return {name: torch.from_numpy(array) for name, array in zip(self.names, arrays)}

    @property
    def postprocess(self):
        """The torch model's post-processing itself: its thresholds and their defaults are what the card records."""
        return self.model.postprocess

    def flip_outputs(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model.flip_outputs(outputs)

    def resize_outputs(self, outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.model.resize_outputs(outputs, size)

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        raise UsageError("an ONNX Runtime session runs a model; train the torch model (--backend torch)")


def onnxruntime_model(model: SegModel, weights: Path | None, device: torch.device,
                      dtype: torch.dtype) -> OnnxRuntimeModel:
    """The checkpoint `weights` (whose torch model is `model`) run by ONNX Runtime."""
    if weights is None or not model.dense:
        raise UsageError("--backend onnxruntime runs a dense segcli checkpoint: give --weights FILE or a bundled "
                         "--model (Mask R-CNN-style and library models stay on --backend torch)")
    if device.type != "cpu" or dtype != torch.float32:
        raise UsageError("--backend onnxruntime runs float32 on the CPU: leave out --bf16/--half and --device")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError(f"--backend onnxruntime needs the onnxruntime package: {INSTALL_HINT}") from None
    from segcli.services.export import export_onnx

    tensors, _ = checkpoint_paths(weights)
    exported = tensors.with_suffix(".onnx")
    if exported.is_file() and exported.stat().st_mtime >= tensors.stat().st_mtime:
        return OnnxRuntimeModel(model, exported, torch.get_num_threads())
    with tempfile.TemporaryDirectory() as folder:  # the session reads the whole file when it is made
        try:
            exported = export_onnx(weights, Path(folder) / "model.onnx")
        except ModelError as error:
            raise UsageError(f"--backend onnxruntime: {error}") from None
        return OnnxRuntimeModel(model, exported, torch.get_num_threads())
