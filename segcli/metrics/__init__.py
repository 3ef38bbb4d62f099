"""The one implementation of every metric segcli reports: eval, training validation and compare use it.

    semantic.py          confusion matrix: mIoU, pixel accuracy, Dice
    boundary.py          boundary F1 (Csurka et al.)
    panoptic.py          PQ / SQ / RQ, exactly panopticapi's definition
    instance.py          mask AP, exactly pycocotools' COCOeval (iouType="segm")
    matching.py          which ground-truth image a prediction is for (image id or file stem)
    panoptic_files.py    pq_compute on COCO panoptic json + PNG folders
    instance_results.py  a COCO results list checked against its ground truth, then scored
    parallel.py          per-image work in worker processes
    scoring.py           (Sample, Prediction) pairs scored per mode; the primary metric of each mode
    details.py           what a report needs beyond the metrics: each image's score, a confusion matrix

Every metric is tested against its reference in tests/test_metrics.py. The names below are the public
ones, re-exported here so that `from segcli.metrics import ...` needs no knowledge of the files.
"""

from segcli.metrics.boundary import BoundaryF1, boundary_f1, boundary_f1_per_class
from segcli.metrics.details import ScoreDetails
from segcli.metrics.instance import COCO_STATS, coco_mask_ap
from segcli.metrics.instance_results import score_instance
from segcli.metrics.matching import ImageIndex
from segcli.metrics.panoptic import (
    OFFSET,
    VOID,
    PanopticFormatError,
    PanopticQuality,
    PQStat,
    PQStatCat,
    pq_from_arrays,
    pq_image,
    pq_summary,
)
from segcli.metrics.panoptic_files import match_panoptic, pq_compute
from segcli.metrics.parallel import map_images
from segcli.metrics.scoring import PRIMARY_METRIC, score_panoptic, score_predictions, score_semantic, semantic_result
from segcli.metrics.semantic import ConfusionMatrix, label_counts

__all__ = [
    "COCO_STATS", "OFFSET", "PRIMARY_METRIC", "VOID", "BoundaryF1", "ConfusionMatrix", "ImageIndex", "PQStat",
    "PQStatCat", "PanopticFormatError", "PanopticQuality", "ScoreDetails",
    "boundary_f1", "boundary_f1_per_class", "coco_mask_ap",
    "label_counts", "map_images", "match_panoptic", "pq_compute", "pq_from_arrays", "pq_image", "pq_summary",
    "score_instance", "score_panoptic", "score_predictions", "score_semantic", "semantic_result",
]
