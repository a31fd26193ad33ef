"""Running the bundle's configs from the tests exactly as a user does: ``python -m monai.bundle run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "medmtl_multitask" / "configs"
#: Overrides that make the bundle train in seconds on the tiny preset (one worker, small inputs and widths).
SHRINK = {
    "num_workers": 0,
    "pipeline_options#ct_organ_seg": {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [32, 32, 32], "num_samples": 1},
    "pipeline_options#mammo_mass_det#spatial_size": [64, 96],
    "pipeline_options#cxr_findings#spatial_size": [64, 64],
    "channels": [8, 16, 32, 32],
}


def cli_args(overrides: dict) -> list[str]:
    """``--key value`` pairs; strings go as they are (as typed in a shell), everything else as JSON."""
    return [a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]


def bundle_run(configs: list[Path], overrides: dict, torchrun: int = 0, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``configs`` (merged in order) with ``overrides`` in a subprocess from ``cwd``, one OpenMP thread."""
    config = json.dumps([str(c) for c in configs]) if len(configs) > 1 else str(configs[0])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    cmd = [*launcher, "-m", "monai.bundle", "run", "--config_file", config, *cli_args(overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def check(result: subprocess.CompletedProcess) -> None:
    """Assert the run succeeded, showing the end of its output otherwise."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
