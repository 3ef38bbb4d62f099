"""The model zoo: importing this package registers every builder (one module per architecture)."""

from segcli.models import deeplab, fcn, fullres, maskrcnn, sliding, torchvision_models, unet  # noqa: F401
