"""Networks of medmtl: a shared 2D/3D encoder, task heads and hard / task-norm / soft / mixed parameter sharing.

* :mod:`~medmtl.networks.blocks`: conv / norm blocks that run one set of parameters on 2D and 3D inputs.
* :mod:`~medmtl.networks.encoder`: :class:`SharedEncoder` (feature pyramid, level ``i`` at stride ``2**i``).
* :mod:`~medmtl.networks.heads`: segmentation decoder, (multilabel) classification head, :func:`build_head`.
* :mod:`~medmtl.networks.detection`: MONAI RetinaNet over the pyramid and its ``RetinaNetDetector``.
* :mod:`~medmtl.networks.sharing`: hard / task-norm / soft / mixed (cross-stitch) trunks.
* :mod:`~medmtl.networks.multitask`: :class:`MultiTaskNet`, :class:`TaskView`.
* :mod:`~medmtl.networks.transfer`: :func:`apply_freeze`, :func:`load_pretrained`.
* :mod:`~medmtl.networks.accounting`: parameter counts per component and vs single-task nets.
* :mod:`~medmtl.networks.summary`: ``python -m medmtl.networks.summary`` prints them and the 2D cost.
* :mod:`~medmtl.networks.export`: per-task TorchScript / ONNX exports checked against eager
  (``python -m medmtl.networks.export``).
* :mod:`~medmtl.networks.benchmark`: :func:`benchmark_encoder_2d`.
"""

from __future__ import annotations

from medmtl.networks.accounting import (
    parameter_ratio,
    parameter_summary,
    single_task_parameter_total,
)
from medmtl.networks.benchmark import benchmark_encoder_2d, plain_2d_twin
from medmtl.networks.blocks import ConvNormAct, DimsConv, DimsNorm, ResidualBlock, StemConv
from medmtl.networks.detection import (
    PyramidFPN,
    RetinaNetHead,
    TaskDetector,
    build_detector,
)
from medmtl.networks.encoder import SharedEncoder
from medmtl.networks.heads import ClassificationHead, SegmentationDecoder, build_head
from medmtl.networks.multitask import MultiTaskNet, TaskView
from medmtl.networks.sharing import (
    SHARING_MODES,
    CrossStitch,
    HardSharing,
    MixedSharing,
    SharingTrunk,
    SoftSharing,
    TaskNormSharing,
)
from medmtl.networks.transfer import FREEZE_POLICIES, apply_freeze, load_pretrained

__all__ = [
    "ClassificationHead",
    "ConvNormAct",
    "StemConv",
    "CrossStitch",
    "DimsConv",
    "DimsNorm",
    "FREEZE_POLICIES",
    "HardSharing",
    "MixedSharing",
    "MultiTaskNet",
    "PyramidFPN",
    "ResidualBlock",
    "RetinaNetHead",
    "SHARING_MODES",
    "SegmentationDecoder",
    "SharedEncoder",
    "SharingTrunk",
    "SoftSharing",
    "TaskDetector",
    "TaskNormSharing",
    "TaskView",
    "apply_freeze",
    "benchmark_encoder_2d",
    "build_detector",
    "build_head",
    "load_pretrained",
    "parameter_ratio",
    "parameter_summary",
    "plain_2d_twin",
    "single_task_parameter_total",
]
