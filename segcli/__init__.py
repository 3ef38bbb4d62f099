"""segcli: semantic, instance and panoptic segmentation from the command line."""

__version__ = "0.1.0"

from segcli.models.registry import build_model, list_models  # noqa: E402
from segcli.services.predict import PredictConfig, predict  # noqa: E402

__all__ = ["__version__", "build_model", "list_models", "PredictConfig", "predict"]
