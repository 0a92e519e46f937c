"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata.

scripts/env python -m pipeline.local_runner --data DATA_DIR --output RUN_DIR [--bert NAME_OR_DIR]
    [--direct-num-workers N] [--trainer-config '{"epochs": 4}'] [--beam-arg=--runner=FlinkRunner ...]

The flags are checked (every config built) before TFX and TensorFlow are imported: a bad key fails at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse

from components.example_gen_config import ExampleGenConfig
from pipeline import configs
from pipeline.runs import progress
from trainer.config import TrainerConfig


def beam_args(direct_num_workers: int, extra: list[str]) -> list[str]:
    """DirectRunner in one process by default; several worker processes with --direct-num-workers > 1."""
    if direct_num_workers < 1:
        raise ValueError(f"--direct-num-workers must be >= 1, got {direct_num_workers}")
    args = [f"--direct_num_workers={direct_num_workers}"]
    if direct_num_workers > 1:
        args.append("--direct_running_mode=multi_processing")
    return args + extra


def run(config: configs.PipelineConfig) -> None:
    """Builds the pipeline for `config` and runs it to completion (raises if a component fails)."""
    # Imported here: TFX and TensorFlow take ~15 s to load, the flags are checked before.
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline
    from trainer.bert import resolve_bert_dir

    paths = configs.run_paths(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    bert_dir = resolve_bert_dir(config.trainer.bert)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(paths["metadata_path"])
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, bert_dir, metadata))


def add_trainer_flags(parser: argparse.ArgumentParser) -> None:
    """--bert and --trainer-config (shared with the demo), read by `configs.trainer_config`."""
    parser.add_argument(
        "--bert", default=None, help=f"BERT name or local HF folder (default {TrainerConfig.bert})"
    )
    parser.add_argument("--trainer-config", default="{}", help="JSON of trainer.config.TrainerConfig fields")


def add_logs_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", default="", help="the recommendation service's logs folder to train on too")
    parser.add_argument(
        "--log-spans", type=int, default=ExampleGenConfig.log_spans, help="newest closed spans read (0 = all)"
    )


def logs_config(args: argparse.Namespace) -> dict:
    """PipelineConfig fields of the logs flags."""
    return {
        "logs_dir": args.logs if not args.logs or "://" in args.logs else os.path.abspath(args.logs),
        "example_gen": ExampleGenConfig(log_spans=args.log_spans),
    }


def parse_args(argv: list[str] | None = None) -> configs.PipelineConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="dataset folder (interactions + items)")
    parser.add_argument("--output", required=True, help="run folder: pipeline root, metadata, serving/")
    add_trainer_flags(parser)
    add_logs_flags(parser)
    parser.add_argument("--direct-num-workers", type=int, default=configs.DEFAULT_DIRECT_NUM_WORKERS)
    parser.add_argument(
        "--beam-arg", action="append", default=[], help="extra Beam pipeline arg (repeatable)"
    )
    parser.add_argument("--enable-cache", action="store_true")
    args = parser.parse_args(argv)
    try:  # every config checks itself: a bad key or value is a usage error (exit 2) naming it
        return configs.PipelineConfig(
            data_dir=os.path.abspath(args.data),
            output_dir=os.path.abspath(args.output),
            trainer=configs.trainer_config(args.trainer_config, args.bert),
            beam_pipeline_args=beam_args(args.direct_num_workers, args.beam_arg),
            enable_cache=args.enable_cache,
            **logs_config(args),
        )
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":
    config = parse_args()
    progress.show_progress()
    run(config)
