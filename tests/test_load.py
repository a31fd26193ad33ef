"""Long inference run: 300 ``tiny`` studies in one process keep their memory flat after warm-up."""

from __future__ import annotations

import pytest

from medmtl.bench import quick_config
from medmtl.bench.memory import run_in_subprocess

# slow tier (load study: hundreds of inference studies): python -m pytest -m slow
pytestmark = pytest.mark.slow

STUDIES, WARMUP = 300, 25
#: One tiny CT volume as float32 after loading is ~0.25 MB; keeping one per study would grow the
#: resident set by ~70 MB over the 275 studies after warm-up, so this bound catches such a leak.
FLAT_MB = 32.0


@pytest.fixture(scope="module")
def load() -> dict:
    config = quick_config(
        load_studies=STUDIES,
        load_warmup=WARMUP,
        # coarse CT grid: one sliding window per volume keeps 300 studies to about a minute (0.13 s/study measured)
        load_pipeline_options={
            "ct_organ_seg": {"pixdim": (12.0, 12.0, 12.0), "spatial_size": (32, 32, 32)},
            "nodule_malignancy": {"spatial_size": (16, 16, 16)},
            "mammo_mass_det": {"spatial_size": (48, 64)},
            "cxr_findings": {"spatial_size": (32, 32)},
        },
    )
    # a fresh interpreter: VmHWM is the process's peak and must not hold an earlier test's;
    # one thread: two OpenMP threads on a busy 2-core machine ran this 20x slower
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return run_in_subprocess("medmtl.bench.runner:run_section", timeout=600, name="inference_load", config=config.as_dict())


def test_every_study_is_predicted(load: dict) -> None:
    assert load["studies"] == STUDIES
    assert load["items"] == 4 * STUDIES
    assert len(load["rss_mb_per_study"]) == STUDIES


def test_peak_memory_is_flat_after_warmup(load: dict) -> None:
    print(
        f"{STUDIES} studies in {load['seconds']:.1f} s; RSS {load['rss_mb_after_warmup']:.1f} -> {load['rss_mb_end']:.1f} MB "
        f"(max {load['rss_mb_max_after_warmup']:.1f}, slope {load['rss_slope_mb_per_100_studies']:+.2f} MB/100 studies); "
        f"peak {load['peak_mb_after_warmup']:.1f} -> {load['peak_mb_end']:.1f} MB"
    )
    assert load["peak_growth_mb"] < FLAT_MB
    assert load["rss_mb_max_after_warmup"] - load["rss_mb_after_warmup"] < FLAT_MB
    assert abs(load["rss_slope_mb_per_100_studies"]) < FLAT_MB / 3
