"""What a report needs beyond a mode's metrics, filled by the scoring functions when they are given one.

`eval --report` and `segcli report` read it: each image's score by the mode's primary metric (to find the
worst), a confusion matrix, and for instances the COCOeval run whose precision array gives the PR curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScoreDetails:
    images: list[str] = field(default_factory=list)  # each scored image's name, in scoring order
    per_image: list[float | None] = field(default_factory=list)  # its primary metric (None: nothing to score)
    # semantic and panoptic: (C, C + 1) pixel counts, rows ground truth, columns prediction (the last: no class);
    # instance: (K + 1, K + 1) objects matched at IoU 0.5, the last row and column "background" (missed, extra)
    confusion: np.ndarray | None = None
    coco: object | None = None  # instance: the evaluated pycocotools COCOeval
