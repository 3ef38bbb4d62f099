"""The model zoo: importing this package registers every builder."""

from segcli.models import semantic, torchvision_models  # noqa: F401
