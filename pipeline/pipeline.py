"""The tailtower TFX pipeline: pure wiring of its parameters (runners build and run it).

ExampleGen → StatisticsGen (interactions; CatalogStatisticsGen: the catalog) → ImportSchemaGen →
ExampleValidator (→ AnomaliesGate) and DriftGate (against the previous run's statistics) → Transform →
Trainer → Evaluator (against the latest blessed model) → Pusher.
"""

from __future__ import annotations

from dataclasses import asdict

from tfx import v1 as tfx

from components.anomalies_gate import AnomaliesGate
from components.drift_gate import DriftGate
from components.example_gen import InteractionsExampleGen
from components.trainer import Trainer, VertexTrainer
from pipeline import configs, eval_config
from trainer import features

STATISTICS_GEN_ID = "StatisticsGen"  # its node id: the drift gate's resolver filters on it
CATALOG_STATISTICS_GEN_ID = "CatalogStatisticsGen"  # likewise, for the catalog's statistics


def create_pipeline(
    config: configs.PipelineConfig,
    bert_dir: str,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    """Returns the pipeline for `config`.

    `bert_dir` is `config.trainer.bert` resolved by the runner: a Hugging Face BERT folder (with vocab.txt)
    as the components' workers see it. Transform and Trainer receive it in place of the name.
    """
    configs.check_top_k(config)  # again: the config may have been changed since it was built
    paths = configs.run_paths(config.output_dir)

    # Joins interactions with the catalog, splits per user by time, adds history and sampled negatives (and,
    # with the service's logs, what was shown and taken).
    example_gen = InteractionsExampleGen(
        data_dir=config.data_dir, config=config.example_gen.to_json(), logs_dir=config.logs_dir
    )

    # Finds the previous run's statistics (resolved before this run's exist), for the drift gate. Only
    # StatisticsGen's: Transform writes ExampleStatistics too (pre/post transform, without splits).
    previous_statistics = _previous_statistics(STATISTICS_GEN_ID).with_id("previous_statistics_resolver")
    previous_catalog_statistics = _previous_statistics(CATALOG_STATISTICS_GEN_ID).with_id(
        "previous_catalog_statistics_resolver"
    )

    # Computes statistics over the interaction examples, for the schema and the validator ...
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"]).with_id(
        STATISTICS_GEN_ID
    )
    statistics_gen.add_upstream_node(previous_statistics)
    # ... and over the catalog (the item text lives there only), for the drift gate's text check.
    catalog_statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["catalog"]).with_id(
        CATALOG_STATISTICS_GEN_ID
    )
    catalog_statistics_gen.add_upstream_node(previous_catalog_statistics)

    # Stops the run, naming feature and distance, when the train data drifted from the previous run's.
    drift_gate = DriftGate(
        statistics=statistics_gen.outputs["statistics"],
        previous_statistics=previous_statistics.outputs["statistics"],
        catalog_statistics=catalog_statistics_gen.outputs["statistics"],
        previous_catalog_statistics=previous_catalog_statistics.outputs["statistics"],
        thresholds=config.drift_thresholds.to_json(),
    )

    # Imports the curated raw schema (types, shapes, presence) that the data is validated against.
    schema_gen = tfx.components.ImportSchemaGen(schema_file=configs.SCHEMA_FILE)

    # Checks the statistics of every split against the schema ...
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # ... and stops the run, naming feature and problem, when it found anomalies.
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    # Tokenizes item text (WordPiece), builds id vocabularies, popularity and normalized numeric features.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN,
        custom_config={features.BERT_VOCAB_CONFIG: f"{bert_dir}/vocab.txt"},
        splits_config=tfx.proto.SplitsConfig(analyze=config.train_splits, transform=["train", "eval"]),
    )
    transform.add_upstream_node(anomalies_gate)
    transform.add_upstream_node(drift_gate)

    # Trains the TFRS retrieval + ranking model and exports the serving SavedModel.
    trainer = (VertexTrainer if config.vertex_training else Trainer)(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        catalog=example_gen.outputs["catalog"],
        schema=schema_gen.outputs["schema"],
        run_fn=configs.RUN_FN,
        train_args=tfx.proto.TrainArgs(splits=config.train_splits),
        custom_config={
            **asdict(config.trainer),
            "bert": bert_dir,
            features.ENCODING_CACHE_CONFIG: config.encoding_cache or paths["encoding_cache_dir"],
            **vertex_custom_config(config.vertex_training),
        },
    ).with_id("Trainer")  # one node id (and metadata lineage) wherever it runs

    # Finds the latest blessed model, the baseline for the no-regression check.
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    # Computes AUC, Recall@K, APLT@K and TailCoverage@K on the eval split, sliced by head/tail, and blesses.
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config.make_eval_config(config.eval_gate),
        example_splits=["eval"],
    )

    # Copies a blessed model to <serving_model_dir>/<version>/ for TF Serving.
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=paths["serving_model_dir"])
        ),
    )

    return tfx.dsl.Pipeline(
        pipeline_name=configs.PIPELINE_NAME,
        pipeline_root=paths["pipeline_root"],
        components=[
            example_gen,
            previous_statistics,
            statistics_gen,
            previous_catalog_statistics,
            catalog_statistics_gen,
            drift_gate,
            schema_gen,
            example_validator,
            anomalies_gate,
            transform,
            trainer,
            model_resolver,
            evaluator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
    )


def _previous_statistics(producer_id: str) -> tfx.dsl.Resolver:
    """The latest statistics `producer_id` wrote (in an earlier run: resolved before this run's exist)."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        statistics=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ExampleStatistics,
            producer_component_id=producer_id,
            output_key="statistics",
        ),
    )


def vertex_custom_config(vertex: configs.VertexTraining | None) -> dict:
    """The custom_config keys TFX's Vertex Trainer executor reads (none when the Trainer runs in place)."""
    if vertex is None:
        return {}
    gcp = tfx.extensions.google_cloud_ai_platform
    return {
        gcp.ENABLE_VERTEX_KEY: True,
        gcp.VERTEX_REGION_KEY: vertex.region,
        gcp.TRAINING_ARGS_KEY: {"project": vertex.project, "job_spec": vertex.job_spec()},
    }
