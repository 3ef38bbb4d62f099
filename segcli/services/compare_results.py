"""What a `segcli compare` run measured, as typed records: `CompareResults` > `Approach` > `Run` > `ImageCounts`.

The service builds them, and everything that shows a run reads them: the report writers (`compare_report`), the
CLI's tables and verdicts, the docs generator (scripts/docs_compare.py) and the boundary study. `results.json` is
`CompareResults.to_dict()` and `load` reads one back, so the records and the file hold the same fields in the same
order (older runs in docs/compare/ included).

Metric keys are those of `compare_report.SEED_METRICS` ("miou", "boundary_f1", ...) and "boundary_f1@<k>px" for
boundary F1 at a fixed tolerance of k pixels ("objects-<k>" for the outlines of objects: thing vs stuff).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from segcli import io


@dataclass
class ImageCounts:
    """Per validation image (in the split's order), the counts every number and verdict is computed from: verdicts
    resample images (bootstrap), so the counts are kept image by image."""

    confusion: list = field(default_factory=list)  # (C, C + 1) per image: truth rows, predicted columns, then "other"
    interior_hits: list = field(default_factory=list)  # (C,) per image: right predictions deep inside objects
    interior_totals: list = field(default_factory=list)  # (C,) per image: pixels deep inside objects
    boundary_f1: dict[str, list[float | None]] = field(default_factory=dict)  # tolerance key -> per image


@dataclass
class Run:
    """One training of an approach with one seed (or the model given by --weights: seed None), scored."""

    seed: int | None = None
    train_seconds: float = 0.0
    reused: bool = False  # trained by an earlier compare in the same --out (same configuration): loaded, not retrained
    miou: float | None = None
    pixel_accuracy: float | None = None
    class_accuracy: float | None = None
    interior_accuracy: float | None = None
    boundary_f1: float | None = None  # at eval's tolerance, 2% of the image diagonal
    boundary_f1_px: dict[str, float | None] = field(default_factory=dict)  # at fixed tolerances, "1", "objects-2", ...
    per_class: list[dict] = field(default_factory=list)  # eval's rows: id, name, iou, dice
    majority_class: str = ""  # the class predicted most
    majority_share: float = 0.0  # its share of the predicted pixels
    collapsed: bool = False  # nearly one class everywhere while the truth has several
    images: ImageCounts = field(default_factory=ImageCounts)

    def value(self, key: str) -> float | None:
        """A metric by key: "miou", ..., or "boundary_f1@2px"."""
        if key.startswith("boundary_f1@"):
            return self.boundary_f1_px.get(key.partition("@")[2].removesuffix("px"))
        return getattr(self, key)


@dataclass
class SlidingInference:
    """The sliding window's weights run naively (a window per pixel) and densely (one convolution), at `size` px."""

    size: int
    naive_ms: float
    dense_ms: float
    speedup: float
    max_abs_diff: float  # between the two outputs: the same model gives the same scores


@dataclass
class Approach:
    """One label of --approaches: what its architecture costs, its numbers over seeds (mean and min-max), its runs."""

    model: str = ""  # zoo name, or NAME:ENCODER
    params: int = 0
    gflops: float = 0.0
    receptive_field: int | str = 0  # px, or "global"
    size_multiple: int = 1
    latency_ms: dict[str, float] = field(default_factory=dict)  # image side (str) -> median ms, batch 1
    peak_memory_mb: dict[str, float | None] = field(default_factory=dict)  # image side (str) -> MB above the baseline
    sliding_inference: SlidingInference | None = None  # the sliding window only
    spread: dict[str, list[float] | None] = field(default_factory=dict)  # metric key -> [min, max] over seeds
    miou: float | None = None  # these: means over seeds
    pixel_accuracy: float | None = None
    class_accuracy: float | None = None
    interior_accuracy: float | None = None
    boundary_f1: float | None = None
    boundary_f1_px: dict[str, float | None] = field(default_factory=dict)
    per_class: list[dict] = field(default_factory=list)  # the first seed's
    train_seconds: float = 0.0  # mean over seeds
    collapsed: bool = False  # any seed collapsed
    runs: list[Run] = field(default_factory=list)

    def value(self, key: str) -> float | None:
        """The mean over seeds of a metric by key: "miou", ..., or "boundary_f1@2px"."""
        if key.startswith("boundary_f1@"):
            return self.boundary_f1_px.get(key.partition("@")[2].removesuffix("px"))
        return getattr(self, key)

    @classmethod
    def from_dict(cls, data: dict) -> Approach:
        sliding = data.get("sliding_inference")
        runs = [Run(**{**run, "images": ImageCounts(**run["images"])}) for run in data.get("runs", [])]
        return cls(**{**data, "runs": runs, "sliding_inference": SlidingInference(**sliding) if sliding else None})

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["sliding_inference"] is None:
            del data["sliding_inference"]  # results.json has the key for the sliding window only
        return data


@dataclass
class Environment:
    device: str = "cpu"
    threads: int = 1
    torch: str = ""
    python: str = ""
    machine: str = ""
    processor: str = ""


@dataclass
class CompareResults:
    """A whole run: its settings, the data, the machine, and each approach by label (in --approaches order)."""

    command: str = ""
    data: str = ""  # the dataset folder (OUT/data for generated synthetic data)
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    quick: bool = False  # a smoke test: nothing is judged
    img_size: int = 0  # training crop side
    sizes: list[int] = field(default_factory=list)  # image sides timed
    budget: str = ""  # "80 steps of batch 8" or "3 epochs"
    boundary_tolerances_px: list[int] = field(default_factory=list)
    environment: Environment = field(default_factory=Environment)
    approaches: dict[str, Approach] = field(default_factory=dict)
    train_images: int = 0
    val_images: int = 0
    classes: list[str] = field(default_factory=list)
    interior_pixels: list[int] = field(default_factory=list)  # per class, validation pixels deep inside objects
    wall_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> CompareResults:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"not a segcli compare results.json (unknown keys {', '.join(unknown)})")
        approaches = {label: Approach.from_dict(entry) for label, entry in data.get("approaches", {}).items()}
        environment = Environment(**data.get("environment", {}))
        return cls(**{**data, "approaches": approaches, "environment": environment})

    def to_dict(self) -> dict:
        """results.json's content."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["environment"] = asdict(self.environment)
        data["approaches"] = {label: approach.to_dict() for label, approach in self.approaches.items()}
        if data["wall_seconds"] is None:
            del data["wall_seconds"]
        return data

    def without_seed(self, seed: int) -> CompareResults:
        """The run as if `seed` had not been trained (models given by --weights, seed None, stay)."""
        approaches = {label: replace(entry, runs=[run for run in entry.runs if run.seed != seed])
                      for label, entry in self.approaches.items()}
        return replace(self, seeds=[s for s in self.seeds if s != seed], approaches=approaches)

    def save(self, path: Path) -> Path:
        return io.write_json(path, self.to_dict(), indent=2)


def load(path: str | Path) -> CompareResults:
    """A results.json written by `segcli compare`."""
    return CompareResults.from_dict(io.read_json(Path(path)))
