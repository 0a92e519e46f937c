"""A TFX Trainer that also receives the item catalog.

TFRS retrieval needs every candidate item, not just the ones in the training examples: the catalog (cold items
included) is indexed at export time. The stock Trainer takes one `examples` channel, so this component is the
stock Trainer plus a `catalog` input (an Examples artifact), whose file patterns reach `run_fn` as
`fn_args.custom_config["catalog_files"]`. Everything else behaves exactly like `tfx.v1.components.Trainer`.
`VertexTrainer` is the same component run as a Vertex AI custom job, as
`tfx.extensions.google_cloud_ai_platform.Trainer` runs the stock one.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.components.trainer import fn_args_utils
from tfx.dsl.components.base import base_component, executor_spec
from tfx.extensions.google_cloud_ai_platform import constants as vertex_constants
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer_executor
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from trainer import features

CATALOG_KEY = "catalog"
# custom_config keys of TFX's Vertex Trainer executor, which hands them on to the job: the platform's, not
# run_fn's (TrainerConfig refuses unknown keys), so the executor drops them before calling run_fn.
VERTEX_CONFIG_KEYS = (
    vertex_constants.ENABLE_VERTEX_KEY,
    vertex_constants.VERTEX_REGION_KEY,
    vertex_trainer_executor.TRAINING_ARGS_KEY,
    vertex_trainer_executor.JOB_ID_KEY,
    vertex_trainer_executor.LABELS_KEY,
    vertex_trainer_executor.ENABLE_UCAIP_KEY,
    vertex_trainer_executor.UCAIP_REGION_KEY,
)


class CatalogTrainerSpec(standard_component_specs.TrainerSpec):
    """TrainerSpec with an extra `catalog` Examples input."""

    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        CATALOG_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


def catalog_file_patterns(catalog: types.Artifact) -> list[str]:
    """Returns one glob per split of a catalog Examples artifact (`<uri>/Split-<name>/*`)."""
    splits = artifact_utils.decode_split_names(catalog.split_names)
    return [os.path.join(artifact_utils.get_split_uri([catalog], split), "*") for split in splits]


def requested_gpus(custom_config: dict[str, Any]) -> int:
    """GPUs the Vertex job's machine was asked for (0 outside a Vertex job)."""
    job_spec = (custom_config.get(vertex_trainer_executor.TRAINING_ARGS_KEY) or {}).get("job_spec", {})
    pools = job_spec.get("worker_pool_specs") or [{}]
    return int(pools[0].get("machine_spec", {}).get("accelerator_count", 0))


def check_requested_gpus(requested: int, visible: int) -> None:
    """Fails a job that was given GPUs its TensorFlow cannot see, rather than train on its CPU for hours."""
    if requested and not visible:
        raise RuntimeError(
            f"the Trainer's machine has {requested} GPU(s) but TensorFlow sees none: run the job in an image "
            "built with the Dockerfile's TENSORFLOW_GPU=1 (kubeflow_runner --trainer-image)"
        )


class CatalogTrainerExecutor(trainer_executor.GenericExecutor):
    """GenericExecutor that adds the catalog's file patterns to `fn_args.custom_config` (and drops the
    Vertex job's keys, when it runs inside one)."""

    def _GetFnArgs(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> fn_args_utils.FnArgs:
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        catalog = artifact_utils.get_single_instance(input_dict[CATALOG_KEY])
        given = fn_args.custom_config or {}
        check_requested_gpus(requested_gpus(given), len(tf.config.list_physical_devices("GPU")))
        config = {k: v for k, v in given.items() if k not in VERTEX_CONFIG_KEYS}
        fn_args.custom_config = {**config, features.CATALOG_FILES_CONFIG: catalog_file_patterns(catalog)}
        return fn_args


class Trainer(base_component.BaseComponent):
    """`tfx.v1.components.Trainer` with a `catalog` input; `run_fn` is a dotted path."""

    SPEC_CLASS = CatalogTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(CatalogTrainerExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        catalog: types.BaseChannel,
        run_fn: str,
        schema: types.BaseChannel | None = None,
        train_args: trainer_pb2.TrainArgs | None = None,
        eval_args: trainer_pb2.EvalArgs | None = None,
        custom_config: dict[str, Any] | None = None,
    ):
        spec = CatalogTrainerSpec(
            examples=examples,
            transform_graph=transform_graph,
            catalog=catalog,
            schema=schema,
            train_args=train_args or trainer_pb2.TrainArgs(),
            eval_args=eval_args or trainer_pb2.EvalArgs(),
            run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec)


class VertexCatalogTrainerExecutor(vertex_trainer_executor.GenericExecutor):
    """Starts a Vertex AI custom job that runs `CatalogTrainerExecutor` (the job's spec and region come from
    custom_config's ai_platform_* keys, as for TFX's own Vertex Trainer)."""

    def _GetExecutorClass(self):
        return CatalogTrainerExecutor


class VertexTrainer(Trainer):
    """`Trainer` run as a Vertex AI custom job, on the machine its custom_config asks for."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(VertexCatalogTrainerExecutor)
