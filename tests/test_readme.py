"""The README's Python quickstart runs as written (on tiny data in a temporary folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from medmtl.data.synthetic import generate

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "pip install torch==2.14.1 torchvision==0.29.1" in text
    assert "python -m monai.bundle run --config_file bundles/medmtl_multitask/configs/train.json" in text
    assert 'pip install -e ".[test]" && python -m pytest -q' in text


@pytest.mark.slow
def test_readme_python_quickstart_runs(tmp_path: Path) -> None:
    blocks = python_blocks()
    assert blocks
    generate(tmp_path / "data" / "tiny", preset="tiny", seed=0)
    code = blocks[-1] + "\nassert logits.shape == (1, 3), logits.shape\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_architecture_example_trains(tmp_path: Path, doc: str) -> None:
    text = (README.parent / doc).read_text()
    (code,) = re.findall(r"## Training from Python\n.*?```python\n(.*?)```", text, flags=re.S)
    generate(tmp_path / "data" / "tiny", preset="tiny", seed=0)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nodule_malignancy/auc" in result.stdout
