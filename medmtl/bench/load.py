"""Memory over a long inference run: many ``tiny`` studies through the inference pipeline in one process.

A study is one CT volume, one nodule patch, one chest X-ray and one mammogram of the synthetic
``tiny`` preset. Each study gets its own hard-linked copies of the files (so nothing keyed on
paths is reused and every mask has its own name) and goes through exactly what
``configs/inference.json`` builds: :func:`~medmtl.data.routing.route_inputs`,
:class:`~medmtl.engine.inference.TaskDispatchd` preprocessing, :class:`MultiTaskPredictor` with
NIfTI masks and ``predictions.json``. The process's resident set (``VmRSS``) is sampled after every
item and its high-water mark (``VmHWM``) at the end of the warm-up and at the end of the run:
a leak of a few kilobytes per study shows as a slope over hundreds of studies, a leak of a whole
volume as a growing peak. What legitimately grows is the list of prediction records
(``predictions.json`` is written once, at the end): well under 1 kB per item.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.data.utils import no_collation
from monai.engines import Evaluator
from monai.inferers import SlidingWindowInferer
from monai.utils import set_determinism

from medmtl.bench.config import BenchConfig
from medmtl.bench.memory import status_bytes
from medmtl.data.synthetic import generate
from medmtl.engine.inference import (
    MultiTaskPredictor,
    TaskDispatchd,
    task_postprocessing,
    task_preprocessing,
)
from medmtl.data.routing import route_inputs
from medmtl.networks import MultiTaskNet

__all__ = ["inference_load", "study_datalist"]

_MB = 2.0**20


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst``; copy where links are refused (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (a file or a DICOM series folder) to ``dst``."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(str(src), str(dst))


def study_datalist(source: str | os.PathLike, dest: str | os.PathLike, studies: int, tasks: tuple[str, ...]) -> Path:
    """A datalist of ``studies`` studies (one entry per task each) whose files are links into ``source``.

    Args:
        source: a synthetic dataset folder holding ``datalist.json`` (every section is drawn from).
        dest: empty folder receiving ``study_NNN/<task>/...`` and ``datalist.json``.
        studies: number of studies; the source entries of each task are cycled through.
        tasks: tasks of a study.

    Returns:
        Path of the written datalist (its ``test`` section holds the entries, in study order).
    """
    source, dest = Path(source), Path(dest)
    entries = json.loads((source / "datalist.json").read_text())
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for section in ("training", "validation", "test"):
        for entry in entries.get(section, []):
            by_task[entry["task"]].append(entry)
    missing = [t for t in tasks if not by_task[t]]
    if missing:
        raise ValueError(f"{source / 'datalist.json'}: no entries for task(s) {missing}")
    test = []
    for i in range(studies):
        for task in tasks:
            entry = dict(by_task[task][i % len(by_task[task])])
            image = Path(entry["image"])
            rel = Path(f"study_{i:03d}") / task / image.name
            _link(source / image, dest / rel)
            entry.pop("label", None)  # inference ignores labels; not linking them keeps the copy small
            test.append({**entry, "id": f"study{i:03d}_{task}", "image": rel.as_posix()})
    path = dest / "datalist.json"
    path.write_text(json.dumps({"test": test}, indent=1))
    return path


def _run(config: BenchConfig, root: Path) -> dict[str, Any]:
    tasks = config.tasks
    generate(root / "tiny", preset="tiny", seed=0)
    study_datalist(root / "tiny", root / "studies", config.load_studies, tasks)
    device = torch.device(config.device)
    set_determinism(0)
    network = MultiTaskNet(list(tasks), **config.network).to(device).eval()
    items = route_inputs(root / "studies", "datalist.json", "test", network_tasks=list(tasks))
    preprocessing = TaskDispatchd(task_preprocessing(tasks, config.load_pipeline_options))
    loader = DataLoader(Dataset(items, preprocessing), batch_size=1, num_workers=0, collate_fn=no_collation)
    predictor = MultiTaskPredictor(
        device=device,
        val_data_loader=loader,
        network=network,
        output_dir=root / "predictions",
        postprocessing=task_postprocessing(preprocessing.transforms),
        # as configs/inference.json: windows of the training patch size
        inferer=SlidingWindowInferer(
            roi_size=config.load_pipeline_options["ct_organ_seg"]["spatial_size"], sw_batch_size=config.sw_batch_size, overlap=0.25, mode="gaussian"
        ),
        amp=device.type == "cuda",
    )
    per_study = len(tasks)
    warmup_items = config.load_warmup * per_study
    rss: list[float] = []
    marks: dict[str, float] = {}

    def sample(engine: Evaluator) -> None:
        rss.append(status_bytes("VmRSS") / _MB)
        if engine.state.iteration == warmup_items:
            marks["peak_after_warmup"] = status_bytes("VmHWM") / _MB

    predictor.add_event_handler(Events.ITERATION_COMPLETED, sample)
    start = time.perf_counter()
    predictor.run()
    seconds = time.perf_counter() - start
    peak_end = status_bytes("VmHWM") / _MB
    study_rss = [max(rss[i : i + per_study]) for i in range(0, len(rss), per_study)]
    after = np.asarray(study_rss[config.load_warmup :])
    # least-squares slope of the post-warm-up resident set, in MB per 100 studies
    slope = float(np.polyfit(np.arange(after.size), after, 1)[0] * 100) if after.size > 1 else 0.0
    written = json.loads((root / "predictions" / "predictions.json").read_text())
    return {
        "studies": config.load_studies,
        "items": len(written["items"]),
        "warmup_studies": config.load_warmup,
        "seconds": seconds,
        "seconds_per_study": seconds / config.load_studies,
        "rss_mb_per_study": [round(v, 2) for v in study_rss],
        "rss_mb_after_warmup": float(after[0]),
        "rss_mb_end": float(after[-1]),
        "rss_mb_max_after_warmup": float(after.max()),
        "rss_slope_mb_per_100_studies": slope,
        "peak_mb_after_warmup": marks["peak_after_warmup"],
        "peak_mb_end": peak_end,
        "peak_growth_mb": peak_end - marks["peak_after_warmup"],
        "method": "proc_vmrss_vmhwm",
    }


def inference_load(config: BenchConfig) -> dict[str, Any]:
    """Run :attr:`BenchConfig.load_studies` tiny studies through inference; memory per study.

    Run it in a fresh process (the benchmark does): ``VmHWM`` is the whole process's peak.

    Returns:
        ``studies``, ``items`` (predictions written), ``seconds``, ``seconds_per_study``,
        ``rss_mb_per_study`` (largest ``VmRSS`` sample of each study), ``rss_mb_after_warmup``,
        ``rss_mb_end``, ``rss_mb_max_after_warmup``, ``rss_slope_mb_per_100_studies``,
        ``peak_mb_after_warmup`` / ``peak_mb_end`` (``VmHWM``) and ``peak_growth_mb``.

    Raises:
        RuntimeError: ``/proc/self/status`` is missing (the figures need Linux).
    """
    if not Path("/proc/self/status").exists():
        raise RuntimeError("inference_load reads VmRSS / VmHWM from /proc/self/status (Linux only)")
    if config.load_warmup >= config.load_studies:
        raise ValueError(f"load_warmup ({config.load_warmup}) must be below load_studies ({config.load_studies})")
    with tempfile.TemporaryDirectory(prefix="medmtl_load_") as tmp:
        return _run(config, Path(tmp))
