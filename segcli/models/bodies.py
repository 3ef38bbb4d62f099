"""One registration gives a body its models: semantic, panoptic (`_panoptic`) and contour (`_contour`).

A body (`segcli.models.base.Body`) turns an image into one feature map; the heads of the zoo read it. A new
architecture is one module that defines its body and registers it, as `unet.py` does:

    @register_body("pspnet", title="PSPNet", description="PSPNet: pyramid pooling over a dilated encoder")
    class PSPNetBody(Body):
        def __init__(self, in_channels: int = 3, width: int = 16, bins: int = 4, encoder: str | None = None,
                     encoder_weights: str | None = "imagenet") -> None: ...

registers `pspnet` (`BodyClassifier`: 1x1 classifier, upsampled), `pspnet_panoptic` (`PanopticDeepLab`'s semantic,
centre and offset heads) and `pspnet_contour` (`ContourModel`: classes + object boundaries). Each builder takes
`num_classes`, the head's options (`thing_classes`, `center_sigma`, ...) and the body constructor's own, with its
defaults: `segcli train --model pspnet_panoptic --encoder resnet34 --depth ...` reads them from the builder's
signature, `segcli models` lists the three, and the per-model tests (tests/test_zoo.py) run them. Import the module
in `segcli/models/__init__.py`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from segcli.models.base import Body, SegModel
from segcli.models.contour import ContourModel
from segcli.models.panoptic_deeplab import PanopticDeepLab, resolve_thing_classes
from segcli.models.panoptic_targets import TargetConfig
from segcli.models.registry import register_model
from segcli.models.semantic import BodyClassifier
from segcli.structures import Mode


def _semantic(body_class: type[Body], options: dict, num_classes: int) -> SegModel:
    scores = {"out_channels": num_classes} if body_class.gives_class_scores else {}
    return BodyClassifier(body_class(**options, **scores), num_classes, classify=not body_class.gives_class_scores)


def _panoptic(body_class: type[Body], options: dict, num_classes: int, thing_classes: list[int] | None,
              center_sigma: float) -> SegModel:
    things = resolve_thing_classes(thing_classes, num_classes)
    return PanopticDeepLab(body_class(**options), num_classes, things, head_channels=max(16, 2 * options["width"]),
                           targets=TargetConfig(sigma=center_sigma))


def _contour(body_class: type[Body], options: dict, num_classes: int, thing_classes: list[int] | None,
             boundary_width: int, contact_weight: float) -> SegModel:
    things = resolve_thing_classes(thing_classes, num_classes)
    return ContourModel(body_class(**options), num_classes, things, boundary_width, contact_weight)


@dataclass(frozen=True)
class Variant:
    """A head on any body: the suffix of its models' names, their modes, the head's options and how to build it."""

    suffix: str
    modes: tuple[Mode, ...]
    head_options: dict[str, object]  # builder options of the head, with defaults
    build: Callable[..., SegModel]  # (body class, body options, num_classes, **head options) -> model
    describe: str  # the registry's description; {title} and {description} are the body's


VARIANTS = {
    "semantic": Variant("", (Mode.SEMANTIC,), {}, _semantic, "{description}"),
    "panoptic": Variant("_panoptic", tuple(Mode), {"thing_classes": None, "center_sigma": 4.0}, _panoptic,
                        "{title} body + Panoptic-DeepLab heads: semantic, centres, offsets"),
    "contour": Variant("_contour", tuple(Mode), {"thing_classes": None, "boundary_width": 1, "contact_weight": 1.0},
                       _contour, "{title} predicting classes + object boundaries; instances are interiors grown back "
                       "over the mask"),
}


@dataclass(frozen=True)
class BodyEntry:
    name: str
    body_class: type[Body]
    title: str
    variants: tuple[str, ...]  # keys of VARIANTS

    @property
    def takes_encoder(self) -> bool:
        return "encoder" in inspect.signature(self.body_class).parameters

    @property
    def model_names(self) -> list[str]:
        return [self.name + VARIANTS[key].suffix for key in self.variants]


_BODIES: dict[str, BodyEntry] = {}


def register_body(name: str, *, title: str, description: str, variants: tuple[str, ...] = tuple(VARIANTS),
                  notes: dict[str, str] | None = None) -> Callable[[type[Body]], type[Body]]:
    """Class decorator: the body under `name`, and a registered model per variant (`name`, `name_panoptic`, ...).
    `notes` adds a remark to a variant's description, e.g. {"panoptic": "CPU default"}."""

    def wrap(body_class: type[Body]) -> type[Body]:
        if name in _BODIES:
            raise ValueError(f"body {name!r} is registered twice")
        _BODIES[name] = BodyEntry(name, body_class, title, tuple(variants))
        for key in variants:
            variant = VARIANTS[key]
            text = variant.describe.format(title=title, description=description)
            text += f" ({notes[key]})" if notes and key in notes else ""
            register_model(name + variant.suffix, modes=variant.modes, description=text)(
                _builder(name + variant.suffix, body_class, variant))
        return body_class

    return wrap


def _builder(name: str, body_class: type[Body], variant: Variant) -> Callable[..., SegModel]:
    """A builder whose signature lists every option (the plan, `train` and the CLI read it): num_classes, the body's
    in_channels and width, the head's options, then the body's own."""
    own = inspect.signature(body_class).parameters
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    first = [inspect.Parameter("num_classes", keyword, default=2, annotation=int), own["in_channels"], own["width"]]
    head = [inspect.Parameter(k, keyword, default=v) for k, v in variant.head_options.items()]
    rest = [p for k, p in own.items() if k not in ("in_channels", "width", "out_channels")]
    signature = inspect.Signature([p.replace(kind=keyword) for p in first + head + rest], return_annotation=SegModel)

    def build(*args, **kwargs) -> SegModel:
        bound = signature.bind(*args, **kwargs)  # an option the model does not take: TypeError, as for any builder
        bound.apply_defaults()
        options = dict(bound.arguments)
        num_classes = options.pop("num_classes")
        heads = {k: options.pop(k) for k in variant.head_options}
        return variant.build(body_class, options, num_classes, **heads)

    build.__signature__ = signature
    build.__name__ = build.__qualname__ = name
    build.__module__ = body_class.__module__  # where the architecture lives, for whoever inspects the builder
    build.__doc__ = f"{name}: {body_class.__name__} under the {variant.build.__name__.strip('_')} head."
    return build


def get_body(name: str) -> BodyEntry:
    import segcli.models  # noqa: F401  (importing the zoo registers every body)

    if name not in _BODIES:
        raise ValueError(f"no body named {name!r}; choose from {', '.join(sorted(_BODIES))}")
    return _BODIES[name]


def list_bodies() -> list[BodyEntry]:
    """Every registered body, sorted by name."""
    import segcli.models  # noqa: F401

    return sorted(_BODIES.values(), key=lambda entry: entry.name)


def build_body(name: str, **options) -> Body:
    """The body registered as `name`, with its constructor's options (in_channels, width, depth, encoder, ...)."""
    return get_body(name).body_class(**options)
