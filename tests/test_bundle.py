"""The medmtl_multitask bundle end to end, in the model-zoo style: tiny data, shrinking overrides."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_cli import CONFIGS, REPO, SHRINK, bundle_run, check, cli_args
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out

from medmtl.data.datasets import task_pipeline
from medmtl.data.pipelines import modality_transforms
from medmtl.engine.cases import key_metric_of_cases
from medmtl.engine.components import (
    check_output_dirs,
    default_bundle_root,
    ensure_dataset,
    flag,
    optimizer_param_groups,
    per_task,
    prepare_datalist,
    validation_loader,
)
from medmtl.engine.metrics import summary_key
from medmtl.errors import CheckpointError, ConfigError
from medmtl.tasks import TASKS, TaskSpec, get_task

TRAIN, EVALUATE, POSTPROCESS = CONFIGS / "train.json", CONFIGS / "evaluate.json", CONFIGS / "postprocess.json"
MULTI_GPU_TRAIN, MULTI_GPU_EVALUATE = CONFIGS / "multi_gpu_train.json", CONFIGS / "multi_gpu_evaluate.json"
METADATA, SCHEMA = CONFIGS / "metadata.json", CONFIGS / "metadata_schema.json"



@pytest.fixture(scope="module")
def trained(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    check(bundle_run([TRAIN], {"bundle_root": str(root), "dataset_dir": str(tiny), "num_epochs": 1, "val_interval": 1, **SHRINK}))
    return root


def test_configs_are_in_model_zoo_json_form_and_the_bundle_has_its_license() -> None:
    """model-zoo's pre-commit runs pretty-format-json with --indent=4 --no-sort-keys."""
    for path in sorted(CONFIGS.glob("*.json")):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", path.name
    assert "Apache License" in (CONFIGS.parent / "LICENSE").read_text()


def test_bundle_setting_errors_are_named(tmp_path: Path) -> None:
    assert per_task({"cxr_findings": 2, "nodule_malignancy": 3, "x": 4}, ["nodule_malignancy", "cxr_findings"], "batch_size") == {
        "nodule_malignancy": 3, "cxr_findings": 2}
    with pytest.raises(ConfigError, match="must map each task"):
        per_task(4, ["cxr_findings"], "batch_size")
    with pytest.raises(KeyError, match="unknown task 'b'"):
        per_task({"a": 1}, ["a", "b"], "batch_size")
    with pytest.raises(ConfigError, match="--resume true but .* holds no complete checkpoint"):
        check_output_dirs(tmp_path / "models", tmp_path / "eval", resume=True)
    with pytest.raises(ConfigError, match="no datalist.json in .*mistyped .no such folder.: check --dataset_dir"):
        ensure_dataset(tmp_path / "mistyped", "tiny", generate=False, default_dir=tmp_path / "synthetic_tiny")
    assert not (tmp_path / "mistyped").exists()
    with pytest.raises(ConfigError, match=r"'validation' section holds no entries for task\(s\) \['cxr_findings'\]"):
        validation_loader({"nodule_malignancy": [{"image": 0}], "cxr_findings": []}, 1, 0, ["nodule_malignancy", "cxr_findings"], "validation")


def test_the_data_step_reads_the_datalist_the_run_reads(tiny: Path, tmp_path: Path) -> None:
    """A --datalist given directly is used as it is: no synthetic data appears in the default folder."""
    default = tmp_path / "synthetic_tiny"
    assert prepare_datalist(tiny / "datalist.json", "tiny", generate=False, default_dir=default) == str(tiny / "datalist.json")
    assert not default.exists()
    with pytest.raises(ConfigError, match="no elsewhere.json in .*check --dataset_dir"):
        prepare_datalist(tiny / "elsewhere.json", "tiny", generate=False, default_dir=default)


def test_metadata_verifies_against_shipped_schema() -> None:
    verify_metadata(meta_file=str(METADATA), filepath=str(SCHEMA))
    meta = json.loads(METADATA.read_text())
    tasks = {v["task"] for v in meta["network_data_format"]["inputs"].values()}
    assert tasks == {"ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"}


@pytest.mark.parametrize("task,n", [("ct_organ_seg", 4), ("nodule_malignancy", 1), ("cxr_findings", 8)])
def test_verify_net_in_out_per_task(task: str, n: int) -> None:
    fmt = json.loads(METADATA.read_text())["network_data_format"]
    suffix = "" if task == "ct_organ_seg" else f"_{task}"
    verify_net_in_out(
        net_id="network_def", meta_file=str(METADATA), config_file=str(TRAIN), n=n,
        **{"network_def#default_task": task,
           "_meta_#network_data_format#inputs#image": fmt["inputs"][f"image{suffix}"],
           "_meta_#network_data_format#outputs#pred": fmt["outputs"][f"pred{suffix}"]},
    )


def test_bundle_readme_has_the_model_zoo_sections_and_license_files() -> None:
    bundle = CONFIGS.parent
    headings = {line[3:].strip() for line in (bundle / "docs" / "README.md").read_text().splitlines() if line.startswith("## ")}
    zoo = {"Model Overview", "Data", "Training configuration", "Input", "Output", "Performance", "MONAI Bundle Commands", "References", "License"}
    assert zoo <= headings, sorted(zoo - headings)
    assert (bundle / "LICENSE").is_file() and "CC BY" in (bundle / "docs" / "data_license.txt").read_text()


def test_model_zoo_verify_data_shape_on_inference_json(tmp_path: Path) -> None:
    """model-zoo's ``verify_data_shape``: ``verify_net_in_out`` on ``inference.json`` with the
    metadata as shipped (n=1), in a bundle folder that holds no trained weights yet."""
    shutil.copytree(CONFIGS, tmp_path / "configs")
    verify_net_in_out(
        net_id="network_def", meta_file=str(tmp_path / "configs" / "metadata.json"),
        config_file=str(tmp_path / "configs" / "inference.json"), bundle_root=str(tmp_path),
    )
    # the weights are still required to run: a named error, not a deep traceback
    workflow = ConfigWorkflow(config_file=str(tmp_path / "configs" / "inference.json"), workflow_type="infer", bundle_root=str(tmp_path))
    with pytest.raises(RuntimeError) as err:  # MONAI's config parser wraps errors of the components it builds
        workflow.parser.get_parsed_content("network")
    assert isinstance(err.value.__cause__, CheckpointError) and "model.pt" in str(err.value.__cause__)


def test_train_workflow_properties(tiny: Path, tmp_path: Path) -> None:
    workflow = ConfigWorkflow(config_file=str(TRAIN), workflow_type="train", bundle_root=str(tmp_path), dataset_dir=str(tiny), **SHRINK)
    workflow.initialize()
    assert not workflow.check_properties()


def train_config(tiny: Path, tmp_path: Path, **overrides: object) -> ConfigParser:
    """train.json on the tiny preset with ``overrides``, as ``--key value`` on the command line sets them."""
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(tiny), "cache": "none", **SHRINK, **overrides})
    return parser


def test_head_lr_scale_gives_the_heads_their_own_scheduled_rate(tiny: Path, tmp_path: Path) -> None:
    default = train_config(tiny, tmp_path).get_parsed_content("optimizer")
    assert len(default.param_groups) == 1  # scale 1: one group, the optimizer of earlier runs
    parser = train_config(tiny, tmp_path, head_lr_scale=0.25, weighting="uncertainty")
    net, opt = parser.get_parsed_content("network"), parser.get_parsed_content("optimizer")
    trunk, heads, weights = opt.param_groups
    assert {id(p) for p in heads["params"]} == {id(p) for p in net.heads.parameters()}
    assert {id(p) for p in trunk["params"]} | {id(p) for p in heads["params"]} == {id(p) for p in net.parameters()}
    assert heads["lr"] == pytest.approx(0.25 * trunk["lr"]) and weights["weight_decay"] == 0.0
    scheduler = parser.get_parsed_content("lr_scheduler")
    opt.step()
    scheduler.step()
    assert heads["lr"] == pytest.approx(0.25 * trunk["lr"]) and trunk["lr"] < parser["learning_rate"]
    with pytest.raises(ValueError, match="head_lr_scale"):
        optimizer_param_groups(net, parser.get_parsed_content("loss_weighting"), head_lr_scale=0.5)


def test_head_lr_scale_per_task_scales_only_the_named_heads(tiny: Path, tmp_path: Path) -> None:
    parser = train_config(tiny, tmp_path, head_lr_scale={"cxr_findings": 0.3, "not_trained": 0.5})
    net, opt = parser.get_parsed_content("network"), parser.get_parsed_content("optimizer")
    rest, cxr = opt.param_groups  # the unnamed heads stay with the trunk (their registered scale is 1)
    assert {id(p) for p in cxr["params"]} == {id(p) for p in net.heads["cxr_findings"].parameters()}
    assert {id(p) for p in net.heads["ct_organ_seg"].parameters()} <= {id(p) for p in rest["params"]}
    assert rest["lr"] == parser["learning_rate"] and cxr["lr"] == pytest.approx(0.3 * parser["learning_rate"])
    weighting = parser.get_parsed_content("loss_weighting")
    assert len(optimizer_param_groups(net, weighting, learning_rate=1e-3, head_lr_scale={"cxr_findings": 1})) == 1
    with pytest.raises(ValueError, match="'ct_organ_seg'.*positive"):
        optimizer_param_groups(net, weighting, learning_rate=1e-3, head_lr_scale={"ct_organ_seg": 0})


def test_one_task_s_preprocessing_is_replaced_from_the_config(tiny: Path, tmp_path: Path) -> None:
    """``train#preprocessing#<task>`` is the task's pipeline: replacing the entry (another
    ``_target_``) or one of its arguments changes that task's dataset and no other."""
    replaced = {"_target_": "medmtl.data.pipelines.modality_transforms", "modality": "cxr", "mode": "eval",
                "task": "cxr_findings", "spatial_size": [40, 40]}
    parser = train_config(tiny, tmp_path, tasks="cxr_findings,mammo_mass_det", **{
        "train#preprocessing#cxr_findings": replaced,
        "train#preprocessing#mammo_mass_det#options": {"mammo_mass_det": {"spatial_size": [48, 72]}},
    })
    datasets = parser.get_parsed_content("train#dataset")
    assert datasets["cxr_findings"].transform is parser.get_parsed_content("train#preprocessing#cxr_findings")
    assert datasets["cxr_findings"][0]["image"].shape == (1, 40, 40)
    assert datasets["mammo_mass_det"][0]["image"].shape == (1, 48, 72)
    # validation keeps the bundle's pipeline_options (64 x 64 in SHRINK)
    assert parser.get_parsed_content("validate#dataset")["cxr_findings"][0]["image"].shape == (1, 64, 64)


def test_a_task_without_an_entry_gets_its_default_seeded_pipeline(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task registered outside the bundle (no ``preprocessing`` entry) trains with its modality
    pipeline, its registered pipeline options and the run's augmentation seed."""
    spec = TaskSpec(name="cxr_effusion_cls", modality="cxr", spatial_dims=2, kind="classification",
                    class_names=("no_effusion", "effusion"), patch_size=(64, 64), pipeline_options={"spatial_size": [48, 48]})
    monkeypatch.setitem(TASKS, spec.name, spec)
    parser = train_config(tiny, tmp_path, tasks=f"cxr_findings,{spec.name}", seed=3)
    assert spec.name not in parser["train#preprocessing"]
    pipelines = parser.get_parsed_content("train#dataset#transforms_for_task")
    assert list(pipelines) == ["cxr_findings", spec.name]
    cxr = next(e for e in json.loads((tiny / "datalist.json").read_text())["training"] if e["task"] == "cxr_findings")
    entry = {**cxr, "image": str(tiny / cxr["image"]), "task": spec.name, "label": int(cxr["label"][2])}
    default = modality_transforms("cxr", "train", task=spec)
    default.set_random_state(seed=3)
    expected = default(dict(entry))["image"]
    assert expected.shape == (1, 48, 48)
    torch.testing.assert_close(pipelines[spec.name](dict(entry))["image"], expected)
    # the eval section builds it too, unseeded, without augmentation
    evaluated = parser.get_parsed_content("validate#dataset#transforms_for_task")[spec.name](dict(entry))["image"]
    torch.testing.assert_close(evaluated, task_pipeline(spec.name, "eval")(dict(entry))["image"])


@pytest.mark.slow
def test_training_writes_checkpoints_logs_and_metrics(trained: Path) -> None:
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    assert list((trained / "eval").glob("events.out.tfevents.*"))
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"ct_organ_seg", "nodule_malignancy", "mammo_mass_det", "cxr_findings"}
    assert "dice_mean" in metrics["tasks"]["ct_organ_seg"] and "map@0.1" in metrics["tasks"]["mammo_mass_det"]
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"model", "config"}  # the weights and the settings that shaped them
    assert any(k.startswith("trunk.") for k in state["model"])


@pytest.mark.slow
def test_rerun_without_resume_refuses_to_overwrite(trained: Path, tiny: Path) -> None:
    before = (trained / "models" / "model.pt").read_bytes()
    result = bundle_run([TRAIN], {"bundle_root": str(trained), "dataset_dir": str(tiny), "num_epochs": 1, **SHRINK})
    assert result.returncode != 0
    assert "earlier run's outputs exist" in result.stdout + result.stderr
    assert (trained / "models" / "model.pt").read_bytes() == before


@pytest.mark.slow
def test_false_on_the_command_line_means_false(trained: Path, tiny: Path) -> None:
    """fire hands ``--resume false`` to the config as the string "false"; it must not resume or overwrite."""
    before = (trained / "models" / "model.pt").read_bytes()
    overrides = {"bundle_root": str(trained), "dataset_dir": str(tiny), "num_epochs": 1, "resume": "false", "overwrite": "false", **SHRINK}
    result = bundle_run([TRAIN], overrides)
    assert result.returncode != 0
    assert "earlier run's outputs exist" in result.stdout + result.stderr
    assert (trained / "models" / "model.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("true", True), ("Yes", True), ("1", True), (False, False), ("false", False), ("False", False), ("0", False), (None, False)]
)
def test_flag_reads_json_and_command_line_booleans(value: object, expected: bool) -> None:
    assert flag(value, "resume") is expected


def test_flag_refuses_anything_else() -> None:
    with pytest.raises(ConfigError, match="--resume 'maybe'"):
        flag("maybe", "resume")


@pytest.mark.slow
def test_resume_continues_to_the_next_epoch(trained: Path, tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "resumed"
    (root / "models").mkdir(parents=True)
    for f in (trained / "models").glob("*.pt"):
        (root / "models" / f.name).write_bytes(f.read_bytes())
    check(bundle_run([TRAIN], {"bundle_root": str(root), "dataset_dir": str(tiny), "num_epochs": 2, "val_interval": 1, "resume": True, **SHRINK}))
    assert (root / "models" / "checkpoint_epoch=2.pt").is_file()
    assert json.loads((root / "eval" / "metrics.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_evaluate_writes_test_metrics(trained: Path, tiny: Path) -> None:
    check(bundle_run([TRAIN, EVALUATE], {"bundle_root": str(trained), "dataset_dir": str(tiny), **SHRINK}))
    metrics = json.loads((trained / "eval" / "metrics_test.json").read_text())
    assert metrics["tasks"]["nodule_malignancy"]["accuracy"] >= 0.0
    assert "delta_m" not in metrics  # no baselines given
    # the per-case records beside it give back every task's key metric
    cases = json.loads((trained / "eval" / "cases_test.json").read_text())["tasks"]
    for task, values in metrics["tasks"].items():
        spec = get_task(task)
        key = summary_key(spec, spec.key_metric)
        assert key_metric_of_cases(spec, cases[task]) == pytest.approx(values[key], nan_ok=True), task
    # model.pt carries the settings that shaped the network and its preprocessing
    saved = torch.load(trained / "models" / "model.pt", weights_only=True)["config"]
    assert saved["channels"] == SHRINK["channels"] and saved["pipeline_options"]["cxr_findings"]["spatial_size"] == [64, 64]


@pytest.mark.slow
def test_postprocessing_is_chosen_on_validation_and_applied_on_test(trained: Path, tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "postprocessed"
    (root / "models").mkdir(parents=True)
    shutil.copy(trained / "models" / "model.pt", root / "models" / "model.pt")
    overrides = {"bundle_root": str(root), "dataset_dir": str(tiny), **SHRINK}
    check(bundle_run([TRAIN, EVALUATE, POSTPROCESS], overrides))
    choice = json.loads((root / "models" / "postprocessing.json").read_text())
    entry = choice["tasks"]["ct_organ_seg"]
    assert choice["section"] == "validation" and set(entry["dice"]) == {"lung", "liver", "spleen", "kidney"}
    assert set(entry["largest_component"]) <= set(entry["dice"]) and entry["cases"] >= 1
    # no second choice over the first unless asked
    again = bundle_run([TRAIN, EVALUATE, POSTPROCESS], overrides)
    assert again.returncode != 0 and "postprocessing.json exists" in again.stdout + again.stderr
    # the test evaluation applies it ("auto") and says so beside its numbers; "none" does not
    check(bundle_run([TRAIN, EVALUATE], overrides))
    applied = json.loads((root / "eval" / "metrics_test.json").read_text())["postprocessing"]
    expected = {"ct_organ_seg": {"largest_component": entry["largest_component"]}} if entry["largest_component"] else {}
    assert applied == expected
    check(bundle_run([TRAIN, EVALUATE], {**overrides, "largest_component": "none", "overwrite": True}))
    assert json.loads((root / "eval" / "metrics_test.json").read_text())["postprocessing"] == {}
    # another model.pt in the folder (trained again into it) is not evaluated with this choice
    shutil.copy(trained / "models" / "checkpoint_epoch=1.pt", root / "models" / "model.pt")
    stale = bundle_run([TRAIN, EVALUATE], {**overrides, "overwrite": True})
    assert stale.returncode != 0 and "chosen for another model" in stale.stdout + stale.stderr


@pytest.mark.slow
def test_the_bundle_runs_from_its_own_folder(tiny: Path, tmp_path: Path) -> None:
    # a copy of the bundle folder, as model-zoo ships it, run from inside: outputs go to ./models, ./eval
    bundle = tmp_path / "medmtl_multitask"
    shutil.copytree(CONFIGS.parent, bundle, ignore=shutil.ignore_patterns("data", "models", "eval", "logs"))
    result = bundle_run([Path("configs") / "train.json"], {"dataset_dir": str(tiny), "tasks": "nodule_malignancy", "num_epochs": 1,
                                                           "val_interval": 1, **SHRINK}, cwd=bundle)
    check(result)
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "eval" / "metrics.json").is_file()


def test_bundle_root_is_found_from_the_bundle_and_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert default_bundle_root() == "bundles/medmtl_multitask"
    monkeypatch.chdir(CONFIGS.parent)
    assert default_bundle_root() == "."
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="pass --bundle_root DIR"):
        default_bundle_root()


@pytest.mark.slow
def test_mlflow_tracking_logs_losses_weights_metrics_and_params(tiny: Path, tmp_path: Path) -> None:
    import mlflow  # the test extra installs it (setup.cfg: tracking)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tasks = "nodule_malignancy,cxr_findings"
    check(bundle_run([TRAIN], {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(tiny), "tasks": tasks, "num_epochs": 2,
                               "val_interval": 1, "tracking": "mlflow", "tracking_uri": uri, **SHRINK}))
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "monai_experiment"]
    runs = client.search_runs(experiment.experiment_id)
    metrics = {k for r in runs for k in r.data.metrics}
    params = {k: v for r in runs for k, v in r.data.params.items()}
    assert "train_loss" in metrics
    for task in tasks.split(","):
        assert {f"epoch_loss/{task}", f"epoch_weight/{task}"} <= metrics
    assert "nodule_malignancy/auc" in metrics and "cxr_findings/auc_mean" in metrics
    assert params["weighting"] == "equal" and params["num_epochs"] == "2" and "task_shares" in params


@pytest.mark.slow
def test_single_task_baselines_give_delta_m(tiny: Path, tmp_path: Path) -> None:
    tasks = ["nodule_malignancy", "cxr_findings"]
    # baselines as a single-task run's metrics.json holds them, with known values: scores trained
    # on the tiny preset's 2-3 validation cases are 0 or 1 by luck, and a zero baseline has no
    # relative change (the evaluator refuses it), which made a trained baseline a flaky fixture
    baselines = []
    for task in tasks:
        path = tmp_path / f"{task}_metrics.json"
        values = {summary_key(get_task(task), m): 0.5 for m in get_task(task).metrics}
        path.write_text(json.dumps({"epoch": 1, "score": 0.5, "tasks": {task: values}}))
        baselines.append(str(path))
    root = tmp_path / "mtl"
    check(bundle_run([TRAIN], {"bundle_root": str(root), "dataset_dir": str(tiny), "tasks": ",".join(tasks), "num_epochs": 1, "val_interval": 1,
                               "weighting": "static", "weighting_params": {"weights": "3:1"}, "baselines": baselines, **SHRINK}))
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["key_metric"] == "delta_m"
    assert set(metrics["delta_m"]["per_task"]) == set(tasks)
    assert metrics["score"] == pytest.approx(metrics["delta_m"]["delta_m"])
    # every metric against a baseline of 0.5: the per-task change is the mean of (m - 0.5) / 0.5, in percent
    nodule = metrics["tasks"]["nodule_malignancy"]
    expected = sum(100 * (nodule[k] - 0.5) / 0.5 for k in ("auc", "accuracy")) / 2
    assert metrics["delta_m"]["per_task"]["nodule_malignancy"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_ckpt_export_traces_a_task(trained: Path) -> None:
    out = trained / "nodule.ts"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(out),
         "--ckpt_file", str(trained / "models" / "model.pt"), "--key_in_ckpt", "model", "--meta_file", str(METADATA),
         "--config_file", str(TRAIN), "--network_def#default_task", "nodule_malignancy", "--use_trace", "true",
         "--input_shape", "[1, 1, 32, 32, 32]", *cli_args({"channels": SHRINK["channels"]})],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    check(result)
    exported = torch.jit.load(str(out))
    assert exported(torch.rand(2, 1, 32, 32, 32)).shape == (2, 2)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_evaluate_each_sample_once(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "ddp"
    common = {"bundle_root": str(root), "dataset_dir": str(tiny), **SHRINK}
    # every task in each step with the strategy that needs the most of DDP: one fused forward,
    # reduced losses for the weights and a second (no-grad) forward for FAMO's update
    every_task = {"sampling": "all", "weighting": "famo", "weighting_params": {"update": "same_batch"}}
    check(bundle_run([TRAIN, MULTI_GPU_TRAIN], {**common, **every_task, "num_epochs": 1, "val_interval": 1}, torchrun=2))
    assert (root / "models" / "model.pt").is_file()
    # only rank 0 logs: one process wrote TensorBoard events
    writers = {p.name.split(".")[-2] for p in (root / "eval").glob("events.out.tfevents.*")}
    assert len(writers) == 1
    check(bundle_run([TRAIN, EVALUATE, MULTI_GPU_EVALUATE], {**common, "output_dir": str(root / "ddp_eval")}, torchrun=2))
    check(bundle_run([TRAIN, EVALUATE], {**common, "output_dir": str(root / "single_eval")}))
    ddp = json.loads((root / "ddp_eval" / "metrics_test.json").read_text())["tasks"]
    single = json.loads((root / "single_eval" / "metrics_test.json").read_text())["tasks"]
    assert ddp["mammo_mass_det"]["num_images"] == single["mammo_mass_det"]["num_images"]
    for task, values in single.items():
        for key, value in values.items():
            assert ddp[task][key] == pytest.approx(value, abs=1e-5, nan_ok=True), (task, key)
