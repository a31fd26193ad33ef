"""The bundle tested the way model-zoo's ``ci/unit_tests/test_<bundle>.py`` test theirs.

One ``unittest.TestCase``: a fake dataset made in ``setUp`` (here medmtl's ``tiny`` synthetic
preset), ``ConfigWorkflow`` for ``train.json`` (properties checked, trained, finalized), then
``train.json`` + ``evaluate.json``, then ``inference.json`` on what training wrote, each with the
bundle's own ``logging.conf`` and ``metadata.json`` as model-zoo passes them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from medmtl.data.synthetic import generate

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "medmtl_multitask"
# small enough for a CPU test: 1 epoch of narrow networks on 8 mm CT and 64-pixel radiographs
OVERRIDE = {
    "num_epochs": 1,
    "val_interval": 1,
    "num_workers": 0,
    "cache": "none",
    "channels": [8, 16, 32, 32],
    "pipeline_options#ct_organ_seg": {"pixdim": [8.0, 8.0, 8.0], "spatial_size": [32, 32, 32], "num_samples": 1},
    "pipeline_options#mammo_mass_det#spatial_size": [64, 96],
    "pipeline_options#cxr_findings#spatial_size": [64, 64],
}


class TestMultiTaskBundle(unittest.TestCase):
    def setUp(self) -> None:
        self.dataset_dir = Path(tempfile.mkdtemp())
        self.bundle_root = Path(tempfile.mkdtemp())
        generate(self.dataset_dir, preset="tiny", seed=3)
        # the bundle's configs in a folder of its own, as a downloaded zoo bundle is
        shutil.copytree(BUNDLE / "configs", self.bundle_root / "configs")

    def tearDown(self) -> None:
        shutil.rmtree(self.dataset_dir)
        shutil.rmtree(self.bundle_root)

    def _workflow(self, workflow_type: str, *configs: str, **override: object) -> ConfigWorkflow:
        configs_dir = self.bundle_root / "configs"
        files = [str(configs_dir / c) for c in configs]
        return ConfigWorkflow(
            workflow_type=workflow_type,
            config_file=files if len(files) > 1 else files[0],
            logging_file=str(configs_dir / "logging.conf"),
            meta_file=str(configs_dir / "metadata.json"),
            bundle_root=str(self.bundle_root),
            dataset_dir=str(self.dataset_dir),
            **override,
        )

    @staticmethod
    def _run_checked(workflow: ConfigWorkflow, name: str) -> None:
        """initialize, check the required and optional properties, run, finalize."""
        workflow.initialize()
        check_result = workflow.check_properties()
        if check_result:
            raise ValueError(f"check properties for {name} config failed: {check_result}")
        workflow.run()
        workflow.finalize()

    def test_train_eval_infer_config(self) -> None:
        self._run_checked(self._workflow("train", "train.json", **OVERRIDE), "train")
        self.assertTrue((self.bundle_root / "models" / "model.pt").is_file())

        validator = self._workflow("eval", "train.json", "evaluate.json", **OVERRIDE)
        validator.initialize()
        validator.run()
        validator.finalize()
        tested = json.loads((self.bundle_root / "eval" / "metrics_test.json").read_text())
        self.assertEqual(set(tested["tasks"]), {"ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"})

        # inference reads the network and preprocessing settings from model.pt: no overrides
        self._run_checked(self._workflow("infer", "inference.json", num_workers=0, datalist="datalist.json"), "inference")
        predictions = json.loads((self.bundle_root / "predictions" / "predictions.json").read_text())
        test_ids = [e["id"] for e in json.loads((self.dataset_dir / "datalist.json").read_text())["test"]]
        self.assertEqual([i["id"] for i in predictions["items"]], test_ids)


if __name__ == "__main__":
    unittest.main()
