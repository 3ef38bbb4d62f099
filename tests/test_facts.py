from __future__ import annotations

from typer.testing import CliRunner

from segcli.cli import app
from segcli.models.facts import count_parameters, empirical_receptive_field, gflops, model_facts, receptive_field
from segcli.models.registry import build_model


def test_hand_computed_receptive_fields():
    # Sliding window: the classifier sees exactly its patch.
    assert receptive_field(build_model("sliding", width=4, patch=32)) == 32
    assert receptive_field(build_model("sliding", width=4, patch=11)) == 11
    # Full resolution: each 3x3 layer adds 2 * dilation pixels.
    assert receptive_field(build_model("fullres", width=4, depth=8)) == 1 + 8 * 2
    assert receptive_field(build_model("fullres", width=4, depth=3, dilations=[1, 2, 4])) == 1 + 2 * (1 + 2 + 4)


def test_unet_receptive_field_by_hand_and_by_gradient():
    # Depth 1 by hand: stem 2 convs (1 + 2 + 2 = 5), 2x2 pool (+1, stride 2), 2 convs at stride 2
    # (+4 +4 = 14), bilinear x2 upsampling (2 coarse taps: +2), 2 convs at stride 1 (+2 +2) = 20.
    assert receptive_field(build_model("unet", width=4, depth=1)) == 20
    model = build_model("unet", width=8, depth=3)
    theory = receptive_field(model)
    assert theory > receptive_field(build_model("unet", width=4, depth=2)) > 20  # deeper: wider context
    # With its real (random) weights, the gradient of the centre pixel reaches the whole theoretical field.
    measured = empirical_receptive_field(model, 256)
    assert 0.9 * theory <= measured <= theory


def test_global_context_is_reported():
    assert receptive_field(build_model("deeplab", width=4)) == "global"


def test_gflops_scale_with_pixels_for_fullres():
    model = build_model("fullres", width=4, depth=2)
    assert abs(gflops(model, 64) * 4 - gflops(model, 128)) < 1e-6
    expected = 2 * (64 * 64) * (3 * 4 * 9 + 4 * 4 * 9 + 4 * 2) / 1e9  # convs + 1x1 classifier, 2 FLOPs per MAC
    assert abs(gflops(model, 64) - expected) / expected < 0.05


def test_model_facts_and_cli_info():
    facts = model_facts("fullres", size=64)
    assert facts["parameters"] == count_parameters(build_model("fullres"))
    assert facts["receptive_field"] == 17 and facts["size_multiple"] == 1 and facts["modes"] == ["semantic"]
    result = CliRunner().invoke(app, ["models", "--info", "sliding", "--size", "64"])
    assert result.exit_code == 0 and "receptive_field" in result.output and "32" in result.output
