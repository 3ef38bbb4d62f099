from __future__ import annotations

import pytest
from torch import nn

from segcli.errors import ModelError
from segcli.models import registry


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError) as error:
        registry.build_model("no_such_model")
    message = str(error.value)
    assert "no_such_model" in message
    for entry in registry.list_models():
        assert entry.name in message


def test_duplicate_registration_is_refused():
    @registry.register_model("_test_dup", modes=("semantic",), description="test")
    def _first() -> nn.Module:
        return nn.Identity()

    try:
        with pytest.raises(ValueError, match="twice"):
            registry.register_model("_test_dup", modes=("semantic",), description="again")(_first)
    finally:
        registry._MODELS.pop("_test_dup")


def test_unset_options_keep_builder_defaults():
    seen = {}

    @registry.register_model("_test_defaults", modes=("instance",), description="test")
    def _builder(width: int = 7, depth: int = 3) -> nn.Module:
        seen.update(width=width, depth=depth)
        return nn.Identity()

    try:
        registry.build_model("_test_defaults", width=None, depth=5)
        assert seen == {"width": 7, "depth": 5}
        assert "_test_defaults" in registry.models_for_mode("instance")
        assert "_test_defaults" not in registry.models_for_mode("semantic")
    finally:
        registry._MODELS.pop("_test_defaults")
