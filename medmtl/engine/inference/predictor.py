"""The inference engine: :class:`MultiTaskPredictor`, a ``monai.engines.Evaluator`` over routed items.

It is the wiring of a run: it checks the planned outputs (:mod:`~medmtl.engine.inference.schema`),
runs the network per item and applies the item's task postprocessing
(:mod:`~medmtl.engine.inference.transforms`), and hands masks and manifest items to its
:class:`~medmtl.engine.inference.writer.PredictionWriter`, which publishes the run as one set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import Evaluator
from monai.inferers import Inferer
from monai.utils import IgniteInfo, min_version, optional_import

from medmtl.engine.inference.schema import check_outputs
from medmtl.engine.inference.writer import PredictionWriter
from medmtl.engine.kinds import engine_kind
from medmtl.engine.steps import task_predict
from medmtl.errors import ConfigError
from medmtl.tasks import get_task

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MultiTaskPredictor"]


class MultiTaskPredictor(Evaluator):
    """Predict every item of a loader with its task's head and write masks and ``predictions.json``.

    Items (from :func:`medmtl.data.routing.route_inputs`, preprocessed by
    :class:`~medmtl.engine.inference.transforms.TaskDispatchd`) are predicted one by one, since
    their shapes differ; the loader should not collate them
    (``collate_fn=monai.data.utils.no_collation``): each batch is a list of item dicts.

    Before running, the files it would write are checked
    (:func:`~medmtl.engine.inference.schema.check_outputs`, for the items of the loader's
    ``dataset.data``): existing ones raise ``ConfigError`` unless ``overwrite``.

    Args:
        device: where the network runs.
        val_data_loader: iterable of lists of preprocessed item dicts.
        network: a :class:`~medmtl.networks.MultiTaskNet` holding a head for every item's task.
        output_dir: folder of the masks and ``predictions.json``.
        postprocessing: ``{task: transform}`` from
            :func:`~medmtl.engine.inference.transforms.task_postprocessing`.
        inferer: used for every segmentation task (default: gaussian sliding windows of the
            task's patch size); give a ``SlidingWindowInferer`` with ``sw_device`` (windows) and
            ``device`` (stitched logits; ``"cpu"`` for volumes too large for the GPU).
        overwrite: replace the outputs of an earlier run.
        amp: autocast on CUDA.
        val_handlers: handlers to attach (e.g. :class:`medmtl.engine.handlers.ProgressBar`).
        non_blocking: non-blocking host-to-device copies.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        output_dir: str | os.PathLike,
        postprocessing: Mapping[str, Callable[[dict], Any]],
        inferer: Inferer | None = None,
        overwrite: bool = False,
        amp: bool = False,
        val_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        # MONAI's postprocessing applies one transform to every output; here it depends on the task
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            non_blocking=non_blocking,
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.network = network
        if not str(output_dir).strip():
            # Path("") is the working directory: outputs would land among the user's own files
            raise ConfigError("output_dir is empty; give the folder the predictions go to (--output_dir DIR)")
        self.output_dir = Path(output_dir)
        self.task_postprocessing = dict(postprocessing)
        self.inferer = inferer
        self.overwrite = bool(overwrite)
        self._use_amp = bool(amp) and torch.device(device).type == "cuda"
        self.writer = PredictionWriter(self.output_dir, self.overwrite)
        self.records: list[dict[str, Any]] = []
        self.add_event_handler(Events.STARTED, lambda _: self.records.clear())
        self.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: self.records.extend(engine.state.output))
        self.add_event_handler(Events.COMPLETED, lambda _: self.write_predictions())

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Check the planned outputs, predict every item into a staging folder, then move the set in."""
        items = getattr(getattr(self.data_loader, "dataset", None), "data", None)
        check_outputs(items if items is not None else [], self.output_dir, self.overwrite)
        self.writer.open()
        try:
            super().run(global_epoch)
        finally:
            self.writer.discard()

    def _iteration(self, engine: Any, batchdata: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        self.network.eval()
        return [self._predict_item(engine, item) for item in batchdata]

    def _predict_item(self, engine: Any, item: Mapping[str, Any]) -> dict[str, Any]:
        spec = get_task(item["task"])
        if spec.name not in self.task_postprocessing:
            raise ConfigError(f"no postprocessing for task {spec.name!r}; it exists for {sorted(self.task_postprocessing)}")
        # a plain tensor: MetaTensor's meta tracking through every layer costs time, and the
        # postprocessing takes the geometry from the preprocessed image itself
        image = item["image"].as_tensor() if isinstance(item["image"], MetaTensor) else torch.as_tensor(item["image"])
        with torch.autocast("cuda", enabled=self._use_amp):
            pred = task_predict(self.network, spec, image[None], engine.state.device, self.inferer)
        data = {**item, **engine_kind(spec).raw_output(pred[0])}
        data = self.task_postprocessing[spec.name](data)
        return self.writer.record(spec, data)

    def write_predictions(self) -> Path:
        """Move this run's outputs into ``output_dir`` as one set, ``predictions.json`` last."""
        return self.writer.publish(self.records)
