"""The pipeline builds with every component, and compiles to a Kubeflow Pipelines v2 spec that kfp reads."""

import dataclasses
import json

import pytest
import tensorflow_data_validation as tfdv
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.components.trainer import executor as trainer_executor
from tfx.components.trainer import fn_args_utils
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor
from tfx.types import artifact_utils, standard_artifacts

from components.drift_gate_config import DriftThresholds
from components.example_gen_config import ExampleGenConfig
from components.trainer import (
    CATALOG_KEY,
    VERTEX_CONFIG_KEYS,
    CatalogTrainerExecutor,
    Trainer,
    VertexCatalogTrainerExecutor,
    check_requested_gpus,
    requested_gpus,
)
from pipeline import configs, kubeflow_runner
from pipeline import pipeline as pipeline_module
from pipeline.pipeline import create_pipeline
from trainer import features
from trainer.config import DEFAULT_BERT, TrainerConfig

COMPONENT_IDS = {
    "InteractionsExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "previous_statistics_resolver",
    "CatalogStatisticsGen",
    "previous_catalog_statistics_resolver",
    "DriftGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "Pusher",
}


def _config(tmp_path, **fields) -> configs.PipelineConfig:
    return configs.PipelineConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), **fields)


def _components(config: configs.PipelineConfig) -> dict:
    return {c.id: c for c in create_pipeline(config, bert_dir="/models/bert").components}


def test_create_pipeline_has_every_component(tmp_path):
    pipeline = create_pipeline(_config(tmp_path), bert_dir="/models/bert")
    assert {component.id for component in pipeline.components} == COMPONENT_IDS
    assert pipeline.pipeline_info.pipeline_root == str(tmp_path / "run" / configs.PIPELINE_ROOT_DIRNAME)


def test_curated_schema_covers_exactly_the_raw_features():
    schema = tfdv.load_schema_text(configs.SCHEMA_FILE)
    assert {f.name for f in schema.feature} == set(features.INTERACTION_FEATURES + features.ITEM_FEATURES)


def test_transform_waits_for_the_anomalies_and_drift_gates(tmp_path):
    pipeline = create_pipeline(_config(tmp_path), bert_dir="/models/bert")
    nodes = {c.id: c for c in pipeline.components}
    assert {"AnomaliesGate", "DriftGate"} <= {node.id for node in nodes["Transform"].upstream_nodes}
    # The previous run's statistics are resolved before this run's StatisticsGen writes new ones.
    assert "previous_statistics_resolver" in {node.id for node in nodes["StatisticsGen"].upstream_nodes}
    catalog_statistics = nodes["CatalogStatisticsGen"]
    assert "previous_catalog_statistics_resolver" in {node.id for node in catalog_statistics.upstream_nodes}
    assert catalog_statistics.inputs["examples"].output_key == "catalog"  # the item text's only home
    assert {"StatisticsGen", "CatalogStatisticsGen"} <= {
        node.id for node in nodes["DriftGate"].upstream_nodes
    }
    thresholds = DriftThresholds.from_json(nodes["DriftGate"].exec_properties["thresholds"])
    assert thresholds == DriftThresholds()


def test_kubeflow_v2_spec_compiles_and_loads(tmp_path):
    output = tmp_path / "tailtower_pipeline.json"
    kubeflow_runner.main(["--output", str(output), "--image", "tailtower:test"])
    job = json.loads(output.read_text())
    spec = json_format.ParseDict(
        job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=True
    )
    tasks = set(spec.root.dag.tasks)
    # The resolver compiles to one task per resolved channel (`<id>-model-resolver`, ...).
    for component in COMPONENT_IDS:
        assert any(task == component or task.startswith(f"{component}-") for task in tasks), component
    images = {
        executor["container"]["image"]
        for executor in job["pipelineSpec"]["deploymentSpec"]["executors"].values()
        if "container" in executor
    }
    assert images == {"tailtower:test"}


def test_the_refresh_pipeline_compiles_to_catalog_refresh_then_pusher(tmp_path):
    output = tmp_path / "tailtower_refresh_pipeline.json"
    kubeflow_runner.main(["--refresh", "--output", str(output), "--run-root", "gs://bucket/run"])
    spec = json.loads(output.read_text())["pipelineSpec"]
    assert set(spec["root"]["dag"]["tasks"]) == {"CatalogRefresh", "Pusher"}
    parameters = json.dumps(spec["root"]["dag"]["tasks"]["CatalogRefresh"])
    paths = configs.run_paths("gs://bucket/run")
    assert paths["serving_model_dir"] in parameters and paths["encoding_cache_dir"] in parameters
    # Another cache, e.g. one bucket's cache shared by several shops' runs.
    kubeflow_runner.main(["--refresh", "--output", str(output), "--encoding-cache", "gs://shared/cache"])
    parameters = json.dumps(json.loads(output.read_text())["pipelineSpec"]["root"]["dag"]["tasks"])
    assert "gs://shared/cache" in parameters


def test_kubeflow_encoding_cache_flag_reaches_the_trainer():
    _, config = kubeflow_runner.parse_args(["--encoding-cache", "gs://shared/cache"])
    components = {c.id: c for c in create_pipeline(config, bert_dir="/models/bert").components}
    custom = json.loads(components["Trainer"].exec_properties["custom_config"])
    assert custom[features.ENCODING_CACHE_CONFIG] == "gs://shared/cache"


def test_train_splits_reach_transform_analysis_and_trainer(tmp_path):
    config = configs.PipelineConfig(
        data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), train_splits=["train", "eval"]
    )
    components = {c.id: c for c in create_pipeline(config, bert_dir="/models/bert").components}
    splits_config = json.loads(components["Transform"].exec_properties["splits_config"])
    assert splits_config["analyze"] == ["train", "eval"]
    assert json.loads(components["Trainer"].exec_properties["train_args"])["splits"] == ["train", "eval"]


def test_trainer_and_transform_get_the_resolved_bert_folder(tmp_path):
    trainer = TrainerConfig(bert=DEFAULT_BERT, epochs=3)
    components = _components(_config(tmp_path, trainer=trainer))
    custom_config = json.loads(components["Trainer"].exec_properties["custom_config"])
    cache = configs.run_paths(str(tmp_path / "run"))["encoding_cache_dir"]  # the default: beside the root
    assert custom_config == {
        **dataclasses.asdict(trainer),
        "bert": "/models/bert",
        features.ENCODING_CACHE_CONFIG: cache,
    }
    parsed = TrainerConfig.from_custom_config(custom_config, ignore=(features.ENCODING_CACHE_CONFIG,))
    assert parsed == TrainerConfig(bert="/models/bert", epochs=3)
    shared = _components(_config(tmp_path, encoding_cache="gs://bucket/cache"))["Trainer"]
    shared_config = json.loads(shared.exec_properties["custom_config"])
    assert shared_config[features.ENCODING_CACHE_CONFIG] == "gs://bucket/cache"
    transform_config = json.loads(components["Transform"].exec_properties["custom_config"])
    assert transform_config == {features.BERT_VOCAB_CONFIG: "/models/bert/vocab.txt"}


def test_example_gen_gets_the_whole_config_as_one_json_parameter(tmp_path):
    example_gen = ExampleGenConfig(num_negatives=2, rating_threshold=3.0)
    component = _components(_config(tmp_path, example_gen=example_gen))["InteractionsExampleGen"]
    assert set(component.exec_properties) == {"data_dir", "config", "logs_dir"}
    assert component.exec_properties["logs_dir"] == ""  # no service logs unless asked
    assert ExampleGenConfig.from_json(component.exec_properties["config"]) == example_gen


def test_the_gate_k_follows_the_trainer_top_k_and_a_mismatch_fails(tmp_path):
    derived = _config(tmp_path, trainer=TrainerConfig(top_k=5))
    assert derived.eval_gate == configs.EvalGateConfig(top_k=5)
    eval_config = json.loads(_components(derived)["Evaluator"].exec_properties["eval_config"])
    ks = {json.loads(m["config"])["k"] for m in eval_config["metrics_specs"][0]["metrics"] if "config" in m}
    assert ks == {5}
    mismatch = r"TrainerConfig.top_k \(5, .*\) must equal EvalGateConfig.top_k \(10, "
    with pytest.raises(ValueError, match=mismatch):
        _config(tmp_path, trainer=TrainerConfig(top_k=5), eval_gate=configs.EvalGateConfig(top_k=10))
    changed = _config(tmp_path)
    changed.trainer = TrainerConfig(top_k=5)  # after construction: create_pipeline checks again
    with pytest.raises(ValueError, match=mismatch):
        create_pipeline(changed, bert_dir="/models/bert")


def test_pipeline_config_rejects_bad_fields(tmp_path):
    with pytest.raises(TypeError, match="PipelineConfig.trainer must be a TrainerConfig, got {'epochs': 2}"):
        _config(tmp_path, trainer={"epochs": 2})
    with pytest.raises(ValueError, match=r"train_splits must be a non-empty list of \('train', 'eval'\)"):
        _config(tmp_path, train_splits=["test"])
    with pytest.raises(ValueError, match="EvalGateConfig: min_auc must be in"):
        configs.EvalGateConfig(min_auc=1.5)


def test_kubeflow_bert_is_the_image_folder_unless_given():
    _, config = kubeflow_runner.parse_args([])
    assert config.trainer.bert == kubeflow_runner.IMAGE_BERT_DIR == f"/opt/tailtower/models/{DEFAULT_BERT}"
    _, config = kubeflow_runner.parse_args(["--trainer-config", '{"bert": "/b", "epochs": 2}'])
    assert config.trainer == TrainerConfig(bert="/b", epochs=2)
    with pytest.raises(SystemExit):
        kubeflow_runner.parse_args(["--bert-dir", "/a", "--trainer-config", '{"bert": "/b"}'])


def test_vertex_trainer_flags_compile_to_a_custom_job_on_that_machine(tmp_path):
    output = tmp_path / "tailtower_pipeline.json"
    kubeflow_runner.main([
        "--output", str(output), "--image", "gcr.io/p/tailtower:1",
        "--vertex-trainer", "my-project/us-central1", "--trainer-accelerator", "NVIDIA_TESLA_T4:2",
    ])  # fmt: skip
    spec = json.loads(output.read_text())["pipelineSpec"]
    trainer = json.dumps(spec["deploymentSpec"]["executors"]["Trainer_executor"])
    assert "components.trainer.VertexCatalogTrainerExecutor" in trainer
    parameters = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    custom = json.loads(parameters["custom_config"]["runtimeValue"]["constantValue"]["stringValue"])
    assert custom["ai_platform_enable_vertex"] is True
    assert custom["ai_platform_vertex_region"] == "us-central1"
    assert custom["ai_platform_training_args"] == {
        "project": "my-project",
        "job_spec": {
            "worker_pool_specs": [{
                "machine_spec": {
                    "machine_type": "n1-standard-8",
                    "accelerator_type": "NVIDIA_TESLA_T4",
                    "accelerator_count": 2,
                },
                "replica_count": 1,
                "container_spec": {"image_uri": "gcr.io/p/tailtower:1"},
            }]
        },
    }  # fmt: skip
    assert custom["epochs"] == TrainerConfig.epochs  # the hyperparameters travel beside the job's keys


def test_the_trainer_runs_in_place_without_vertex_flags_and_bad_ones_fail():
    _, config = kubeflow_runner.parse_args([])
    trainer = {c.id: c for c in create_pipeline(config, bert_dir="/b").components}["Trainer"]
    assert type(trainer) is Trainer
    custom = json.loads(trainer.exec_properties["custom_config"])
    assert not [k for k in custom if k.startswith("ai_platform")]
    _, config = kubeflow_runner.parse_args(
        ["--vertex-trainer", "p/r", "--trainer-accelerator", "NVIDIA_TESLA_T4", "--trainer-image", "gpu:1"]
    )
    assert config.vertex_training == configs.VertexTraining(
        "p", "r", "gpu:1", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1
    )
    l4_on_g2 = ["--trainer-accelerator", "NVIDIA_L4", "--trainer-machine-type", "g2-standard-8"]
    _, config = kubeflow_runner.parse_args(["--vertex-trainer", "p/r", *l4_on_g2])
    assert config.vertex_training.job_spec()["worker_pool_specs"][0]["machine_spec"]["machine_type"] == (
        "g2-standard-8"
    )
    for bad in (
        ["--trainer-accelerator", "NVIDIA_TESLA_T4:1"],  # no --vertex-trainer
        ["--trainer-machine-type", "n1-highmem-8"],
        ["--trainer-image", "gpu:1"],
        ["--vertex-trainer", "p/r", "--trainer-accelerator", "NVIDIA_TESLA_T4:two"],
        ["--vertex-trainer", "p/r", "--trainer-accelerator", "NVIDIA_L4"],  # L4 does not attach to n1
        ["--vertex-trainer", "just-a-project"],  # no region
        ["--refresh", "--vertex-trainer", "p/r"],  # the refresh pipeline trains nothing
    ):
        with pytest.raises(SystemExit):
            kubeflow_runner.parse_args(bad)


def test_the_catalog_executor_hands_run_fn_its_own_keys_only(tmp_path, monkeypatch):
    """Inside a Vertex job the executor gets the job's ai_platform_* keys too; run_fn must not see them
    (TrainerConfig refuses unknown keys)."""
    given = {"epochs": 2, **pipeline_module.vertex_custom_config(configs.VertexTraining("p", "r", "i"))}
    assert set(given) - {"epochs"} and set(given) - {"epochs"} <= set(VERTEX_CONFIG_KEYS)
    monkeypatch.setattr(
        trainer_executor.GenericExecutor, "_GetFnArgs", lambda *_: fn_args_utils.FnArgs(custom_config=given)
    )
    catalog = standard_artifacts.Examples()
    catalog.uri = str(tmp_path / "catalog")
    catalog.split_names = artifact_utils.encode_split_names(["catalog"])
    fn_args = CatalogTrainerExecutor()._GetFnArgs({CATALOG_KEY: [catalog]}, {}, {})
    assert fn_args.custom_config == {
        "epochs": 2,
        features.CATALOG_FILES_CONFIG: [str(tmp_path / "catalog" / "Split-catalog" / "*")],
    }


def test_the_vertex_executor_starts_a_job_that_runs_the_catalog_trainer(monkeypatch):
    """What TFX's Vertex runner is handed: our catalog-aware executor (run in the job's container), the job's
    spec and region; the stock GenericExecutor there would call run_fn without the catalog."""
    started = {}

    def start_cloud_training(*args):
        names = ("inputs", "outputs", "exec_properties", "executor_class_path", "job_args", "job_id")
        started.update(zip(names, args, strict=False), enable_vertex=args[-2], region=args[-1])

    monkeypatch.setattr(vertex_trainer_executor.runner, "start_cloud_training", start_cloud_training)
    vertex = configs.VertexTraining("p", "us-central1", "gpu:1", accelerator_type="NVIDIA_TESLA_T4",
                                    accelerator_count=1)  # fmt: skip
    custom = {"epochs": 2, **pipeline_module.vertex_custom_config(vertex)}
    VertexCatalogTrainerExecutor().Do({}, {}, {"custom_config": json.dumps(custom)})
    assert started["executor_class_path"] == "components.trainer.CatalogTrainerExecutor"
    assert started["job_args"] == {"project": "p", "job_spec": vertex.job_spec()}
    assert (started["enable_vertex"], started["region"]) == (True, "us-central1")
    assert requested_gpus(custom) == 1 and requested_gpus({"epochs": 2}) == 0


def test_a_job_given_gpus_its_tensorflow_cannot_see_fails():
    check_requested_gpus(0, 0)
    check_requested_gpus(1, 1)
    with pytest.raises(RuntimeError, match="TENSORFLOW_GPU=1"):
        check_requested_gpus(2, 0)
