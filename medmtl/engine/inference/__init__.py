"""Multi-task inference: every routed image through its task's head, one predictions file per run.

The pieces, wired by ``bundles/medmtl_multitask/configs/inference.json``:

1. :func:`medmtl.data.routing.route_inputs` lists the inputs (a datalist section or a scanned
   folder) as items ``{"id", "task", "image", ...}``.
2. :class:`TaskDispatchd` (over :func:`task_preprocessing`) applies each item's task pipeline:
   the config's entry for the task (``task_pipelines``) or its eval pipeline
   (:func:`medmtl.data.datasets.task_pipeline`), with label keys optional.
3. :class:`MultiTaskPredictor` (a ``monai.engines.Evaluator``) runs the network per item
   (sliding windows for segmentation, AMP on CUDA), applies :func:`task_postprocessing` and
   writes the outputs; it refuses to overwrite outputs of an earlier run unless told to.

One stage per module:

* :mod:`~medmtl.engine.inference.schema`: what a run writes: :data:`SCHEMA`,
  :data:`PREDICTIONS_FILE`, :data:`BOX_FRAME`, :data:`STAGING_PREFIX`, :func:`mask_path` and
  :func:`check_outputs` (refuses an earlier run's outputs); documents ``predictions.json``.
* :mod:`~medmtl.engine.inference.transforms`: per-task pre- and postprocessing:
  :func:`task_preprocessing`, :class:`TaskDispatchd`, :func:`task_postprocessing`,
  :class:`BoxesToStoredGridd`.
* :mod:`~medmtl.engine.inference.writer`: :class:`PredictionWriter`: masks and manifest items
  staged in a hidden folder, published with ``predictions.json`` as one set.
* :mod:`~medmtl.engine.inference.predictor`: :class:`MultiTaskPredictor`, the engine wiring them.

Every public name is re-exported here (``medmtl.engine.inference.X``, as the bundle configs use).
"""

from __future__ import annotations

from medmtl.engine.inference import predictor, schema, transforms, writer
from medmtl.engine.inference.predictor import MultiTaskPredictor
from medmtl.engine.inference.schema import (
    BOX_FRAME,
    PREDICTIONS_FILE,
    SCHEMA,
    STAGING_PREFIX,
    check_outputs,
    mask_path,
)
from medmtl.engine.inference.transforms import (
    BoxesToStoredGridd,
    TaskDispatchd,
    task_postprocessing,
    task_preprocessing,
)
from medmtl.engine.inference.writer import PredictionWriter

# each module's __all__ names its public names once; the package exports them all
__all__ = [*schema.__all__, *transforms.__all__, *writer.__all__, *predictor.__all__]
