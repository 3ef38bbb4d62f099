"""Which ground-truth image a prediction is for: by image id, else by file stem (predict's image id is the stem)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class ImageIndex:
    """Finds the ground-truth image a prediction is for: by image_id, else by file stem (predict's image_id is the
    stem)."""

    def __init__(self, entries: Iterable[tuple[object, str]]) -> None:
        self.ids: set = set()
        self.stems: dict[str, object] = {}
        for image_id, file_name in entries:
            self.ids.add(image_id)
            self.stems.setdefault(Path(str(file_name)).stem, image_id)

    def find(self, image_id: object, file_name: str | None = None) -> object | None:
        if image_id in self.ids:
            return image_id
        if str(image_id) in self.stems:
            return self.stems[str(image_id)]
        return self.stems.get(Path(file_name).stem) if file_name else None
