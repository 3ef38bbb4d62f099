"""The model zoo: importing this package registers every builder."""

from segcli.models import contour, maskrcnn, panoptic_deeplab, semantic, star, torchvision_models  # noqa: F401
