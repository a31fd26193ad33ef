"""Per-task deployment exports of a :class:`~medmtl.networks.MultiTaskNet`: TorchScript and ONNX.

Usage::

    python -m medmtl.networks.export MODEL_PT OUTPUT_DIR [--tasks ct_organ_seg,cxr_findings]
        [--formats torchscript onnx] [--input-size ct_organ_seg=96,96,96] [--atol 1e-4] [--overwrite]

reads a training checkpoint (``models/model.pt``: ``{"model": state_dict, "config": {...}}``,
rebuilt as the bundle's ``inference.json`` does) and writes, per task, ``OUTPUT_DIR/<task>.ts``
(``torch.jit.script``) and ``OUTPUT_DIR/<task>.onnx`` (``torch.onnx.export`` with the
``torch.export`` exporter; needs ``pip install 'medmtl[export]'``). :func:`export_tasks` does the
same from Python, from a checkpoint or from a ``MultiTaskNet``.

What is exported: :func:`task_module` — the task's encoder path (for mixed sharing every branch,
which cross-stitching mixes) and head, nothing of the other tasks. Input ``image`` (B, C, *spatial),
float32; batch and spatial sizes are dynamic in both formats (segmentation sizes divisible by
``size_divisible``). Outputs:

- segmentation: ``logits`` (B, num_classes, *spatial); classification / multilabel: ``logits``
  (B, num_classes) (softmax resp. per-label sigmoid at prediction time);
- detection: the RetinaNet head maps of the ``L`` FPN levels, flattened in MONAI's
  ``use_list_output`` order: ``classification_0 .. classification_{L-1}`` (B, A * num_classes,
  *s_l), then ``box_regression_0 .. box_regression_{L-1}`` (B, A * 2 * dims, *s_l) — a list of
  ``2L`` tensors in TorchScript, ``2L`` named outputs in ONNX. Anchor generation, box decoding,
  score thresholding and NMS are **not** exported: they stay in MONAI's ``RetinaNetDetector``,
  which accepts the TorchScript module as its network (it carries ``spatial_dims``,
  ``num_classes``, ``num_anchors``, ``size_divisible``, ``cls_key``, ``box_reg_key`` and the anchor
  settings ``base_anchor_shapes`` / ``feature_map_scales``)::

      ts = torch.jit.load("mammo_mass_det.ts")
      anchors = AnchorGeneratorWithAnchorShape(ts.feature_map_scales, ts.base_anchor_shapes)
      detector = medmtl.networks.build_detector(ts, anchors, box_key="boxes", label_key="box_labels")

Every file is checked before it is published: it is written to a temporary file in the output
folder, loaded back from there (``torch.jit.load`` / ``onnxruntime``) and run on the example input
(batch 2 at the task's trained patch size) and on a second one (batch 1, each dynamic spatial size
one ``size_divisible`` larger); the largest absolute difference to the eager model's outputs must
be within ``atol``. Only then is the file renamed to its name (``os.replace``); an existing file is
kept unless ``overwrite``. Exports run on the CPU in float32 on a copy of the network (the given
net is not touched). Each file also carries a JSON description of the task, its input and outputs
(``medmtl_export.json`` in the TorchScript archive's extra files, ``medmtl_export`` in the ONNX
model's ``metadata_props``).

``torch.jit.script(net)`` also compiles the whole ``MultiTaskNet`` (``net(x, task)`` for every task,
which model-zoo's ``ckpt_export`` check needs); the per-task modules here are leaner and typed.
TorchScript is deprecated upstream in favour of ``torch.export``; ONNX is the durable format.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from torch import nn

from medmtl.atomic import publish, write_temp
from medmtl.errors import ConfigError, ExportError, MedMTLError
from medmtl.networks.blocks import check_task_input
from medmtl.networks.detection import RetinaNetHead
from medmtl.networks.encoder import SharedEncoder
from medmtl.networks.multitask import MultiTaskNet
from medmtl.networks.sharing import HardSharing, PerTaskEncoders, SharingTrunk

__all__ = [
    "DEFAULT_ATOL",
    "EXPORT_FORMATS",
    "DetectionTaskModule",
    "ExportCheck",
    "TaskModule",
    "export_tasks",
    "load_network",
    "main",
    "task_module",
]

#: Export formats and the suffix of their files.
EXPORT_FORMATS: dict[str, str] = {"torchscript": ".ts", "onnx": ".onnx"}
#: Largest absolute difference to the eager outputs an export may show (float32 on the CPU).
DEFAULT_ATOL = 1e-4
#: Name of the JSON description inside each exported file.
METADATA_NAME = "medmtl_export.json"
_ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


# --- per-task modules -----------------------------------------------------------------------------


class _TrunkOfTask(nn.Module):
    """A sharing trunk run for one task (``x -> pyramid``); mixed sharing needs every branch."""

    def __init__(self, trunk: SharingTrunk, task: str):
        super().__init__()
        self.trunk = trunk
        self.task = task

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk(x, self.task)


def _task_trunk(trunk: nn.Module, task: str) -> nn.Module:
    """The part of ``trunk`` that task ``task`` runs, as a module ``x -> pyramid``."""
    if isinstance(trunk, HardSharing):
        return trunk.encoder
    if isinstance(trunk, PerTaskEncoders):
        return trunk.encoders[task]
    return _TrunkOfTask(trunk, task)


class TaskModule(nn.Module):
    """One dense / classification task of a ``MultiTaskNet`` as a standalone, scriptable module.

    ``module(x) == net(x, task)`` with the same parameter objects (export a copy to keep them apart);
    only the encoder path of ``task`` and its head are registered. ``forward`` checks the input's
    rank (a 2D input to a 3D task would otherwise run the collapsed 2D kernels) and, for
    segmentation, that the spatial size is divisible by :attr:`size_divisible`.

    Attributes:
        task, kind, spatial_dims, num_classes, in_channels, size_divisible: of the task.
    """

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__()
        if task not in net.task_specs:
            raise ConfigError(f"task {task!r} is not one of the network's tasks {list(net.task_specs)}")
        spec = net.task_specs[task]
        self.task = spec.name
        self.kind = spec.kind
        self.spatial_dims = spec.spatial_dims
        self.num_classes = spec.num_classes
        self.in_channels = _in_channels(net)
        self.size_divisible = net.size_divisible
        self._divisor = net.size_divisible
        self._dense = spec.label_is_image
        self.trunk = _task_trunk(net.trunk, spec.name)
        self.head = net.heads[spec.name]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (B, C, *spatial) of this task's rank (and divisible size)."""
        check_task_input(x, self.task, self.spatial_dims, self._divisor if self._dense else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.trunk(x))


class DetectionTaskModule(TaskModule):
    """A detection task as a standalone, scriptable module: image -> flat list of RetinaNet head maps.

    Output: ``L`` classification maps then ``L`` box-regression maps (MONAI's ``use_list_output``
    order), which ``RetinaNetDetector`` accepts from its network. Carries the attributes the
    detector reads and the anchor settings (:meth:`make_anchor_generator`).
    """

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__(net, task)
        head = self.head
        if not isinstance(head, RetinaNetHead):
            raise ConfigError(f"task {task!r} has no RetinaNet head")
        self.num_anchors = int(head.num_anchors)
        self.size_divisible = tuple(int(s) for s in head.size_divisible)
        self.cls_key = str(head.cls_key)
        self.box_reg_key = str(head.box_reg_key)
        self.base_anchor_shapes = head.base_anchor_shapes
        self.feature_map_scales = head.feature_map_scales
        self.num_levels = len(head.feature_map_scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        self.check_input(x)
        maps = list(self.head.feature_extractor(self.trunk(x)).values())
        return self.head.classification_head(maps) + self.head.regression_head(maps)

    @torch.jit.unused
    def make_anchor_generator(self) -> AnchorGeneratorWithAnchorShape:
        """The anchor generator of this head (for a ``RetinaNetDetector`` around this module)."""
        return AnchorGeneratorWithAnchorShape(self.feature_map_scales, self.base_anchor_shapes)


def task_module(net: MultiTaskNet, task: str) -> TaskModule:
    """:class:`DetectionTaskModule` for a detection task, else :class:`TaskModule` (``ConfigError`` if unknown)."""
    if task in net.task_specs and isinstance(net.heads[task], RetinaNetHead):
        return DetectionTaskModule(net, task)
    return TaskModule(net, task)


def _in_channels(net: MultiTaskNet) -> int:
    encoder = next(m for m in net.trunk.modules() if isinstance(m, SharedEncoder))
    return encoder.in_channels


def _output_names(module: TaskModule) -> list[str]:
    if isinstance(module, DetectionTaskModule):
        return [f"{key}_{level}" for key in (module.cls_key, module.box_reg_key) for level in range(module.num_levels)]
    return ["logits"]


def _metadata(module: TaskModule, fmt: str, input_size: Sequence[int]) -> dict[str, Any]:
    import medmtl

    meta: dict[str, Any] = {
        "format": fmt,
        "task": module.task,
        "kind": module.kind,
        "spatial_dims": module.spatial_dims,
        "num_classes": module.num_classes,
        "input": {"name": "image", "layout": "(B, C, *spatial) float32", "in_channels": module.in_channels,
                  "example_spatial_size": list(input_size), "size_divisible": module._divisor},
        "outputs": _output_names(module),
        "medmtl_version": medmtl.__version__,
        "torch_version": torch.__version__,
    }
    if isinstance(module, DetectionTaskModule):
        meta["detection"] = {
            "outputs": f"{module.num_levels} classification maps then {module.num_levels} box-regression maps",
            "num_anchors": module.num_anchors,
            "base_anchor_shapes": [list(s) for s in module.base_anchor_shapes],
            "feature_map_scales": list(module.feature_map_scales),
            "postprocessing": "not exported: anchor decoding and NMS run in MONAI's RetinaNetDetector",
        }
    return meta


# --- checks and files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportCheck:
    """One exported file and how closely it reproduces the eager model.

    Attributes:
        task, format: what was exported (``format`` in :data:`EXPORT_FORMATS`).
        path: the published file.
        max_abs_diff: largest ``|export - eager|`` over every output of every checked input.
        atol: the tolerance it had to meet.
        input_shapes: the checked input shapes (the example, then a resized one).
        outputs: output names.
        dynamic_dims: input dims (of B, C, *spatial) that accept other sizes.
    """

    task: str
    format: str
    path: Path
    max_abs_diff: float
    atol: float
    input_shapes: tuple[tuple[int, ...], ...]
    outputs: tuple[str, ...]
    dynamic_dims: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol

    def __str__(self) -> str:
        shapes = ", ".join(str(list(s)) for s in self.input_shapes)
        return (
            f"{self.task} {self.format}: {self.path}: max |export - eager| = {self.max_abs_diff:.3g} "
            f"(atol {self.atol:g}) on inputs {shapes}: {'ok' if self.passed else 'FAILED'}"
        )


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch's ``torch.jit.* is deprecated`` FutureWarnings (this module chooses TorchScript)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _max_abs_diff(outputs: Sequence[Any], reference: Sequence[torch.Tensor], where: str) -> float:
    if len(outputs) != len(reference):
        raise ExportError(f"{where}: {len(outputs)} outputs, the eager model gives {len(reference)}")
    worst = 0.0
    for out, ref in zip(outputs, reference):
        out = torch.as_tensor(out)
        if tuple(out.shape) != tuple(ref.shape):
            raise ExportError(f"{where}: output shape {tuple(out.shape)}, the eager model gives {tuple(ref.shape)}")
        worst = max(worst, float((out.float() - ref.float()).abs().max()) if ref.numel() else 0.0)
    return worst


def _flat(output: Any, module: TaskModule) -> list[torch.Tensor]:
    """An eager ``net(x, task)`` / export output as the list of exported outputs."""
    if isinstance(output, dict):
        assert isinstance(module, DetectionTaskModule)
        return list(output[module.cls_key]) + list(output[module.box_reg_key])
    if isinstance(output, torch.Tensor):
        return [output]
    return list(output)


def _check_inputs(example: torch.Tensor, dynamic: Sequence[int], step: int) -> list[torch.Tensor]:
    """The example and a second input: batch 1 if the batch is dynamic, dynamic spatial sizes + ``step``."""
    shape = list(example.shape)
    if 0 in dynamic:
        shape[0] = 1
    for d in dynamic:
        if d >= 2:
            shape[d] += step
    if shape == list(example.shape):
        return [example]
    generator = torch.Generator().manual_seed(1)
    return [example, torch.randn(shape, generator=generator)]


def _export_torchscript(module: TaskModule, meta: dict[str, Any]) -> bytes:
    with _quiet_jit():
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={METADATA_NAME: json.dumps(meta)})
    return buffer.getvalue()


def _run_torchscript(path: Path, inputs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    with _quiet_jit():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        outputs = [loaded(x) for x in inputs]
    return [list(o) if isinstance(o, (list, tuple)) else [o] for o in outputs]


def _export_onnx(module: TaskModule, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    from torch.export import Dim

    # batch and spatial sizes dynamic; Dim.AUTO lets the exporter derive constraints (segmentation
    # sizes are multiples of size_divisible) instead of refusing them. The example's batch is 2:
    # the exporter specialises sizes 0 and 1.
    dims = {d: Dim.AUTO for d in range(example.dim()) if d != 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own internals
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=_output_names(module),
            dynamic_shapes={"x": dims},
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_NAME.removesuffix(".json"), json.dumps(meta)
    return proto.SerializeToString()


def _onnx_session(path: Path) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_dynamic_dims(session: Any) -> tuple[int, ...]:
    """Input dims the ONNX model leaves symbolic (the others were fixed by the exporter)."""
    return tuple(d for d, size in enumerate(session.get_inputs()[0].shape) if not isinstance(size, int))


def _run_onnx(session: Any, inputs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    name = session.get_inputs()[0].name
    return [[torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})] for x in inputs]


def _require_onnx() -> None:
    missing = []
    for package in _ONNX_PACKAGES:
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigError(
            f"the onnx format needs the packages {', '.join(missing)}: pip install 'medmtl[export]' "
            f"(or pip install {' '.join(missing)})"
        )


# --- entry points ---------------------------------------------------------------------------------


def load_network(ckpt_path: str | os.PathLike) -> tuple[MultiTaskNet, dict[str, Any]]:
    """The trained ``MultiTaskNet`` in a training checkpoint (``model.pt``) and its settings, in eval mode.

    The network is rebuilt from the checkpoint's ``"config"`` (tasks, sharing, channels,
    fpn_channels; other arguments at their defaults) as the bundle's ``inference.json`` does.

    Raises:
        CheckpointError: the file is missing or unreadable, or its weights do not fit the network.
        ConfigError: the checkpoint records no configuration.
    """
    from medmtl.engine.model_config import resolve_model_config
    from medmtl.networks.transfer import load_pretrained

    config = resolve_model_config(ckpt_path)
    net = MultiTaskNet(
        config["tasks"], sharing=config["sharing"], channels=config["channels"], fpn_channels=config["fpn_channels"]
    )
    load_pretrained(net, ckpt_path, scope="model")
    return net.eval(), config


def export_tasks(
    source: MultiTaskNet | str | os.PathLike,
    output_dir: str | os.PathLike,
    tasks: str | Sequence[str] | None = None,
    formats: str | Sequence[str] = tuple(EXPORT_FORMATS),
    input_sizes: Mapping[str, Sequence[int]] | None = None,
    overwrite: bool = False,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> list[ExportCheck]:
    """Export ``tasks`` of ``source`` in ``formats`` to ``output_dir/<task>.<suffix>``, each checked.

    Args:
        source: a training checkpoint (``model.pt`` with ``"model"`` and ``"config"``) or a
            ``MultiTaskNet`` (or a DDP / DataParallel wrapper of one; copied, exported in eval mode).
        output_dir: folder of the files (created).
        tasks: task names (list or comma-separated); default every task of the network.
        formats: ``"torchscript"`` and / or ``"onnx"`` (list or comma-separated).
        input_sizes: spatial size of the example input per task; default the size the checkpoint
            was trained at (its ``pipeline_options``), for a network the task's ``patch_size``.
        overwrite: replace existing files (default: refuse before exporting anything).
        atol: largest allowed ``|export - eager|``.
        seed: of the random example inputs.

    Returns:
        One :class:`ExportCheck` per file, in task then format order.

    Raises:
        CheckpointError: ``source`` is a missing or unreadable checkpoint (names the file).
        ConfigError: an unknown task or format, a bad input size, an existing output without
            ``overwrite`` (names the file), or ONNX packages missing.
        ExportError: an export fails or does not match the eager outputs within ``atol``; that
            file is not written (files of earlier tasks / formats are, each checked).
    """
    config: dict[str, Any] | None = None
    if isinstance(getattr(source, "module", None), MultiTaskNet):  # DistributedDataParallel / DataParallel
        source = source.module  # type: ignore[union-attr]
    if isinstance(source, MultiTaskNet):
        origin = "the network"
        net = source
    else:
        origin = os.fspath(source)
        net, config = load_network(source)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks or net.tasks)
    unknown = [t for t in task_list if t not in net.task_specs]
    if unknown or not task_list:
        raise ConfigError(f"{origin}: unknown task(s) {unknown or task_list}; its tasks are {list(net.task_specs)}")
    format_list = [f.strip() for f in formats.split(",") if f.strip()] if isinstance(formats, str) else list(formats)
    bad = [f for f in format_list if f not in EXPORT_FORMATS]
    if bad or not format_list:
        raise ConfigError(f"unknown export format(s) {bad or format_list}; expected some of {list(EXPORT_FORMATS)}")
    sizes = dict(input_sizes or {})
    stray = sorted(set(sizes) - set(task_list))
    if stray:
        raise ConfigError(f"input sizes given for task(s) {stray} that are not exported ({task_list})")
    for task in task_list:
        spec = net.task_specs[task]
        if task not in sizes:
            if config is not None:
                from medmtl.engine.model_config import patch_size

                sizes[task] = patch_size(config, task)
            else:
                sizes[task] = list(spec.patch_size)
        size = [int(s) for s in sizes[task]]
        if len(size) != spec.spatial_dims or any(s <= 0 for s in size):
            raise ConfigError(f"task {task!r}: input size {size} must be {spec.spatial_dims} positive ints")
        if spec.label_is_image and any(s % net.size_divisible for s in size):
            raise ConfigError(f"task {task!r}: input size {size} must be divisible by {net.size_divisible}")
        sizes[task] = size
    out_dir = Path(output_dir)
    targets = {(t, f): out_dir / f"{t}{EXPORT_FORMATS[f]}" for t in task_list for f in format_list}
    directories = [str(p) for p in targets.values() if p.is_dir()]
    if directories:
        raise ConfigError(f"{', '.join(directories)}: is a directory, not an export file")
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        verb = "already exists" if len(existing) == 1 else "already exist"
        raise ConfigError(f"{', '.join(existing)}: {verb}; pass overwrite=True (--overwrite) to replace")
    if "onnx" in format_list:
        _require_onnx()
    out_dir.mkdir(parents=True, exist_ok=True)

    # a float32 CPU copy in eval mode: the caller's network keeps its device, dtype and mode
    reference = copy.deepcopy(net).cpu().float().eval()
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for task in task_list:
        module = task_module(reference, task).eval()
        example = torch.randn([2, module.in_channels, *sizes[task]], generator=generator)
        for fmt in format_list:
            path = targets[(task, fmt)]
            meta = _metadata(module, fmt, sizes[task])
            try:
                data = _export_torchscript(module, meta) if fmt == "torchscript" else _export_onnx(module, example, meta)
            except Exception as e:  # torch raises many types; name the task and format
                detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise ExportError(f"{task} {fmt}: the export failed: {type(e).__name__}: {detail}") from e
            tmp = write_temp(path, lambda f, data=data: f.write(data))
            try:
                if fmt == "torchscript":
                    dynamic = tuple(d for d in range(example.dim()) if d != 1)
                    inputs = _check_inputs(example, dynamic, module._divisor)
                    outputs = _run_torchscript(tmp, inputs)
                else:
                    session = _onnx_session(tmp)
                    dynamic = _onnx_dynamic_dims(session)
                    inputs = _check_inputs(example, dynamic, module._divisor)
                    outputs = _run_onnx(session, inputs)
                    del session  # releases the file (Windows cannot rename an open file)
                with torch.no_grad():
                    expected = [_flat(reference(x, task), module) for x in inputs]
                diff = max(_max_abs_diff(o, e, f"{task} {fmt}") for o, e in zip(outputs, expected))
                check = ExportCheck(
                    task, fmt, path, diff, atol, tuple(tuple(x.shape) for x in inputs),
                    tuple(_output_names(module)), dynamic,
                )
                if not check.passed:
                    raise ExportError(f"{check}; the file was not written (raise --atol if this is float noise)")
                publish(
                    tmp, path, overwrite, conflict=lambda p: ConfigError(f"{p}: was created by someone else during the export; not overwritten")
                )
            finally:
                tmp.unlink(missing_ok=True)
            checks.append(check)
    return checks


def _parse_sizes(items: Sequence[str]) -> dict[str, list[int]]:
    sizes = {}
    for item in items:
        task, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            sizes[task.strip()] = [int(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"--input-size {item!r}: expected TASK=N,N[,N]") from None
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints one check line per file; 0 if every export passed, else 2."""
    parser = argparse.ArgumentParser(prog="python -m medmtl.networks.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="training checkpoint (models/model.pt)")
    parser.add_argument("output_dir", help="folder of the exported files")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task of the model)")
    parser.add_argument("--formats", nargs="+", default=list(EXPORT_FORMATS), choices=list(EXPORT_FORMATS))
    parser.add_argument("--input-size", action="append", default=[], metavar="TASK=N,N[,N]",
                        help="spatial size of the example input (default: the trained patch size)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest allowed |export - eager|")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        checks = export_tasks(
            args.checkpoint, args.output_dir, tasks=args.tasks, formats=args.formats,
            input_sizes=_parse_sizes(args.input_size), overwrite=args.overwrite, atol=args.atol,
        )
    except MedMTLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for check in checks:
        print(check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
