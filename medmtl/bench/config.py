"""What the benchmark runs: sizes, repeats and targets (``full`` and ``quick`` presets)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medmtl.tasks import TaskSpec

__all__ = ["SECTIONS", "TARGETS", "BenchConfig", "full_config", "quick_config"]

#: Benchmark sections, in the order they run.
SECTIONS = ("params", "study_inference", "sliding_window", "train_step", "encoder_2d", "inference_load")

#: Targets: dotted path in the result -> maximum value. ``train_step.loss_only`` applies to every
#: loss-only strategy's ratio to ``equal``; study inference is judged on time and on memory.
TARGETS: dict[str, float] = {
    "params.ratio": 0.4,
    "study_inference.ratio.seconds": 0.7,
    "study_inference.ratio.peak_memory": 0.7,
    "sliding_window.overhead_ratio": 1.05,
    "train_step.loss_only": 1.1,
    "encoder_2d.ratio": 1.3,
}

TASK_NAMES = ("ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings")


@dataclass
class BenchConfig:
    """Settings of one benchmark run.

    Attributes:
        device: ``"cpu"`` or ``"cuda"`` (AMP variants are added on CUDA).
        repeats: timed rounds per measurement (medians are reported).
        warmup: untimed rounds first.
        tasks: the tasks of the multi-task model.
        network: ``MultiTaskNet`` keyword arguments shared by every model built (``channels`` ...).
        study_inputs: task -> input shape (B, C, *spatial) of the synthetic study: the whole CT
            volume, the nodule candidate patches, the radiograph, the mammogram.
        roi_size: sliding-window size of the segmentation task (``None``: its registry patch size).
        sw_batch_size: windows per network call in sliding-window inference.
        sliding_volume: (B, C, H, W, D) of the CT of the sliding-window comparison.
        sliding_network: ``MultiTaskNet`` arguments overriding ``network`` for that comparison.
        train_inputs: task -> batch image shape of the synthetic training step.
        strategies: weighting strategy -> ``build_weighting`` parameters.
        train_repeats: timed rounds of ``train_step`` (steps are short, so more rounds are cheap and
            needed: strategies differ by a few percent at most).
        encoder_2d: ``benchmark_encoder_2d`` keyword arguments (besides device / repeats / warmup).
        load_studies: ``tiny`` studies of the ``inference_load`` section (one process).
        load_warmup: its first studies, after which resident memory should stay flat.
        load_pipeline_options: ``modality_transforms`` options of that run (the bundle's ``tiny`` ones).
        worker_timeout: seconds allowed to one benchmark subprocess (a section or a memory measurement).
    """

    device: str = "cpu"
    repeats: int = 3
    warmup: int = 1
    tasks: tuple[str, ...] = TASK_NAMES
    network: dict[str, Any] = field(default_factory=dict)
    study_inputs: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {
            "ct_organ_seg": (1, 1, 160, 160, 64),
            "nodule_malignancy": (3, 1, 32, 32, 32),
            "mammo_mass_det": (1, 1, 256, 256),
            "cxr_findings": (1, 1, 224, 224),
        }
    )
    roi_size: tuple[int, ...] | None = None
    sw_batch_size: int = 2
    sliding_volume: tuple[int, ...] = (1, 1, 256, 256, 128)
    sliding_network: dict[str, Any] = field(default_factory=dict)
    train_inputs: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {
            "ct_organ_seg": (2, 1, 32, 32, 32),
            "nodule_malignancy": (2, 1, 32, 32, 32),
            "mammo_mass_det": (2, 1, 64, 64),
            "cxr_findings": (2, 1, 64, 64),
        }
    )
    strategies: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "equal": {},
            "static": {"weights": "3:1:1:1"},
            "pflp": {"period": 1, "unit": "step"},
            "itw": {"central": "nodule_malignancy", "switch_at": 2, "unit": "step"},
            "uncertainty": {},
            "dwa": {},
            "gradnorm": {},
            "pcgrad": {},
            "famo": {},
        }
    )
    train_repeats: int = 10
    encoder_2d: dict[str, Any] = field(default_factory=lambda: {"batch_size": 2, "spatial_size": (256, 256)})
    load_studies: int = 300
    load_warmup: int = 25
    load_pipeline_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "ct_organ_seg": {"pixdim": (8.0, 8.0, 8.0), "spatial_size": (32, 32, 32)},
            "nodule_malignancy": {"spatial_size": (32, 32, 32)},
            "mammo_mass_det": {"spatial_size": (64, 96)},
            "cxr_findings": {"spatial_size": (64, 64)},
        }
    )
    worker_timeout: float = 900.0

    def window_spec(self, spec: TaskSpec) -> TaskSpec:
        """``spec`` with ``patch_size`` = :attr:`roi_size` where set (``default_inferer`` windows at the patch size)."""
        return spec if self.roi_size is None else dataclasses.replace(spec, patch_size=tuple(self.roi_size))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (recorded in the result and sent to worker processes)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchConfig:
        """Inverse of :meth:`as_dict` (JSON turns tuples into lists; shapes are made tuples again)."""
        values = dict(values)
        values["tasks"] = tuple(values["tasks"])
        values["sliding_volume"] = tuple(values["sliding_volume"])
        values["roi_size"] = None if values["roi_size"] is None else tuple(values["roi_size"])
        for key in ("study_inputs", "train_inputs"):
            values[key] = {task: tuple(shape) for task, shape in values[key].items()}
        return cls(**values)


def full_config(**overrides: Any) -> BenchConfig:
    """The reference sizes: the default network, a 160x160x64 CT study, a 256x256x128 sliding window.

    On the CPU the sliding-window comparison uses a narrow network (channels 4..32): 75 windows of
    64^3 through the default network take minutes on a few cores, and a cheaper network makes the
    fixed per-call overhead a larger share of the time, so the ratio it gives is an upper bound.
    """
    values: dict[str, Any] = {}
    if overrides.get("device", "cpu") == "cpu":
        values["sliding_network"] = {"channels": (4, 8, 16, 32)}
    values.update(overrides)
    return BenchConfig(**values)


def quick_config(**overrides: Any) -> BenchConfig:
    """Tiny sizes and one timed round: checks the benchmark runs end to end (seconds), not speed."""
    small = {"channels": (4, 8, 16, 32), "hidden_channels": 16, "fpn_channels": 8}
    values: dict[str, Any] = {
        "repeats": 1,
        "warmup": 1,
        "train_repeats": 1,
        "network": small,
        "study_inputs": {
            "ct_organ_seg": (1, 1, 48, 48, 32),
            "nodule_malignancy": (2, 1, 16, 16, 16),
            "mammo_mass_det": (1, 1, 64, 64),
            "cxr_findings": (1, 1, 64, 64),
        },
        "roi_size": (32, 32, 32),
        "sliding_volume": (1, 1, 64, 64, 32),
        "sliding_network": small,
        "train_inputs": {
            "ct_organ_seg": (1, 1, 16, 16, 16),
            "nodule_malignancy": (2, 1, 16, 16, 16),
            "mammo_mass_det": (1, 1, 32, 32),
            "cxr_findings": (2, 1, 32, 32),
        },
        "encoder_2d": {"batch_size": 1, "spatial_size": (64, 64), "channels": (4, 8, 16, 32)},
        "load_studies": 12,
        "load_warmup": 4,
        "worker_timeout": 300.0,
    }
    values.update(overrides)
    return BenchConfig(**values)
