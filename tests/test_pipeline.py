"""The pipeline builds with every component, and compiles to a Kubeflow Pipelines v2 spec that kfp reads."""

import json

import tensorflow_data_validation as tfdv
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline import configs, kubeflow_runner
from pipeline.pipeline import create_pipeline
from trainer import features

COMPONENT_IDS = {
    "InteractionsExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "Pusher",
}


def _config(tmp_path) -> configs.PipelineConfig:
    return configs.PipelineConfig(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run"))


def test_create_pipeline_has_every_component(tmp_path):
    pipeline = create_pipeline(_config(tmp_path), bert_dir="/models/bert")
    assert {component.id for component in pipeline.components} == COMPONENT_IDS
    assert pipeline.pipeline_info.pipeline_root == str(tmp_path / "run" / configs.PIPELINE_ROOT_DIRNAME)


def test_curated_schema_covers_exactly_the_raw_features():
    schema = tfdv.load_schema_text(configs.SCHEMA_FILE)
    assert {f.name for f in schema.feature} == set(features.INTERACTION_FEATURES + features.ITEM_FEATURES)


def test_transform_waits_for_the_anomalies_gate(tmp_path):
    pipeline = create_pipeline(_config(tmp_path), bert_dir="/models/bert")
    transform = next(c for c in pipeline.components if c.id == "Transform")
    assert "AnomaliesGate" in {node.id for node in transform.upstream_nodes}


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


def test_train_splits_reach_transform_analysis_and_trainer(tmp_path):
    config = configs.PipelineConfig(
        data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), train_splits=["train", "eval"]
    )
    components = {c.id: c for c in create_pipeline(config, bert_dir="/models/bert").components}
    splits_config = json.loads(components["Transform"].exec_properties["splits_config"])
    assert splits_config["analyze"] == ["train", "eval"]
    assert json.loads(components["Trainer"].exec_properties["train_args"])["splits"] == ["train", "eval"]
