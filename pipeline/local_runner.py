"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata.

scripts/env python -m pipeline.local_runner --data DATA_DIR --output RUN_DIR [--bert NAME_OR_DIR]
    [--direct-num-workers N] [--trainer-config '{"epochs": 4}'] [--beam-arg=--runner=FlinkRunner ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse  # noqa: E402
import json  # noqa: E402

from tfx import v1 as tfx  # noqa: E402

from pipeline import configs, progress  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402
from trainer.bert import resolve_bert_dir  # noqa: E402


def beam_args(direct_num_workers: int, extra: list[str]) -> list[str]:
    """DirectRunner in one process by default; several worker processes with --direct-num-workers > 1."""
    args = [f"--direct_num_workers={direct_num_workers}"]
    if direct_num_workers > 1:
        args.append("--direct_running_mode=multi_processing")
    return args + extra


def run(config: configs.PipelineConfig) -> None:
    """Builds the pipeline for `config` and runs it to completion (raises if a component fails)."""
    paths = configs.run_paths(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    bert_dir = resolve_bert_dir(config.bert)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(paths["metadata_path"])
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, bert_dir, metadata))


def parse_args(argv: list[str] | None = None) -> configs.PipelineConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="dataset folder (interactions + items)")
    parser.add_argument("--output", required=True, help="run folder: pipeline root, metadata, serving/")
    parser.add_argument("--bert", default=configs.DEFAULT_BERT, help="BERT name or local HF folder")
    parser.add_argument("--direct-num-workers", type=int, default=1)
    parser.add_argument("--trainer-config", default="{}", help="JSON of trainer.config.TrainerConfig fields")
    parser.add_argument(
        "--beam-arg", action="append", default=[], help="extra Beam pipeline arg (repeatable)"
    )
    parser.add_argument("--enable-cache", action="store_true")
    args = parser.parse_args(argv)
    return configs.PipelineConfig(
        data_dir=os.path.abspath(args.data),
        output_dir=os.path.abspath(args.output),
        bert=args.bert,
        trainer=json.loads(args.trainer_config),
        beam_pipeline_args=beam_args(args.direct_num_workers, args.beam_arg),
        enable_cache=args.enable_cache,
    )


if __name__ == "__main__":
    progress.show_progress()
    run(parse_args())
