"""Compiles the same pipeline to a Kubeflow Pipelines v2 / Vertex AI Pipelines spec (JSON).

    scripts/env python -m pipeline.kubeflow_runner --output tailtower_pipeline.json \
        --image gcr.io/PROJECT/tailtower:latest --data gs://BUCKET/data --run-root gs://BUCKET/tailtower

Submit the JSON with the KFP client or a Vertex `PipelineJob`. Beam-heavy components run on
Dataflow when given `--beam-arg=--runner=DataflowRunner --beam-arg=--project=... --beam-arg=--region=...`.
`--trainer-config '{"epochs": 4}'` sets the trainer's hyperparameters, as for the local runner.
`--vertex-trainer PROJECT/REGION [--trainer-machine-type n1-standard-8]
[--trainer-accelerator NVIDIA_TESLA_T4:1] [--trainer-image IMAGE]` runs the Trainer as a Vertex AI custom job
on that machine, e.g. a GPU to fine-tune BERT (`--trainer-config '{"trainable_bert_layers": 6,
"fine_tune_epochs": 2}'`) in an image built with the Dockerfile's TENSORFLOW_GPU=1. The flags are checked
before TFX loads.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse

from pipeline import configs, local_runner
from trainer.config import DEFAULT_BERT

# Where the Dockerfile puts the pretrained MiniLM folder inside the image: it runs
# `fetch_minilm("/opt/tailtower/models")`, which writes <that folder>/DEFAULT_BERT.
IMAGE_BERT_DIR = f"/opt/tailtower/models/{DEFAULT_BERT}"


def compile_pipeline(config: configs.PipelineConfig, image: str, output_file: str, bert_dir: str) -> str:
    """Writes the pipeline spec JSON to `output_file` and returns its path."""
    from tfx import v1 as tfx  # ~15 s: after the flags are checked

    from pipeline.pipeline import create_pipeline

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    runner.run(create_pipeline(config, bert_dir), write_out=True)
    return output_file


def compile_refresh_pipeline(config: configs.PipelineConfig, image: str, output_file: str) -> str:
    """Writes the catalog refresh pipeline's spec (pipeline/refresh.py) over the same run root."""
    from tfx import v1 as tfx

    from pipeline.refresh import create_refresh_pipeline

    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    pipeline = create_refresh_pipeline(
        config.data_dir,
        config.output_dir,
        encoding_cache=config.encoding_cache,
        max_recall_drop=config.eval_gate.regression_tolerance,
        beam_pipeline_args=config.beam_pipeline_args,
    )
    runner.run(pipeline, write_out=True)
    return output_file


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, configs.PipelineConfig]:
    """The flags and the checked PipelineConfig (a bad setting exits with a usage error naming it)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="tailtower_pipeline.json", help="pipeline spec JSON to write")
    parser.add_argument("--image", default="tailtower:latest", help="container image built from ./Dockerfile")
    parser.add_argument("--data", default="gs://YOUR_BUCKET/data", help="dataset folder the workers can read")
    parser.add_argument("--run-root", default="gs://YOUR_BUCKET/tailtower", help="pipeline root + serving")
    parser.add_argument(
        "--bert-dir", default=None, help=f"BERT folder as the workers see it (default {IMAGE_BERT_DIR})"
    )
    parser.add_argument("--trainer-config", default="{}", help="JSON of trainer.config.TrainerConfig fields")
    parser.add_argument("--beam-arg", action="append", default=[], help="Beam pipeline arg (repeatable)")
    parser.add_argument(
        "--encoding-cache",
        default="",
        help="frozen-BERT encoding cache shared across runs (default <run-root>/encoding-cache)",
    )
    parser.add_argument(
        "--vertex-trainer",
        default="",
        metavar="PROJECT/REGION",
        help="run the Trainer as a Vertex AI custom job there (default: where the orchestrator runs it)",
    )
    parser.add_argument(
        "--trainer-machine-type",
        default=None,
        help=f"the job's machine, with --vertex-trainer (default {configs.VertexTraining.machine_type})",
    )
    parser.add_argument(
        "--trainer-accelerator", default="", metavar="TYPE[:COUNT]", help="e.g. NVIDIA_TESLA_T4:1"
    )
    parser.add_argument(
        "--trainer-image",
        default="",
        help="the job's image, with --vertex-trainer (default --image; a GPU: Dockerfile's TENSORFLOW_GPU=1)",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="compile the catalog refresh pipeline (pipeline/refresh.py) instead",
    )
    local_runner.add_logs_flags(parser)  # --logs gs://…/logs: the service's logs the workers can read
    args = parser.parse_args(argv)
    try:
        # The workers read BERT from the image: a folder, never a name to fetch.
        trainer = configs.trainer_config(args.trainer_config, args.bert_dir, default_bert=IMAGE_BERT_DIR)
        config = configs.PipelineConfig(
            data_dir=args.data,
            output_dir=args.run_root,
            trainer=trainer,
            beam_pipeline_args=args.beam_arg,
            encoding_cache=args.encoding_cache,
            vertex_training=vertex_training(args),
            **local_runner.logs_config(args),
        )
    except ValueError as e:
        parser.error(str(e))
    return args, config


def vertex_training(args: argparse.Namespace) -> configs.VertexTraining | None:
    """The Vertex training job the flags ask for (None: no --vertex-trainer)."""
    job_flags = args.trainer_machine_type or args.trainer_accelerator or args.trainer_image
    if args.refresh and (args.vertex_trainer or job_flags):
        raise ValueError("--refresh trains nothing: drop --vertex-trainer and the --trainer-* job flags")
    if not args.vertex_trainer:
        if job_flags:
            raise ValueError(
                "--trainer-machine-type, --trainer-accelerator and --trainer-image need --vertex-trainer"
            )
        return None
    project, _, region = args.vertex_trainer.partition("/")
    accelerator, _, count = args.trainer_accelerator.partition(":")
    if count and not count.isdigit():
        raise ValueError(f"--trainer-accelerator: COUNT must be a positive integer, got {count!r}")
    return configs.VertexTraining(
        project=project,
        region=region,
        image=args.trainer_image or args.image,
        machine_type=args.trainer_machine_type or configs.VertexTraining.machine_type,
        accelerator_type=accelerator,
        accelerator_count=int(count) if count else int(bool(accelerator)),
    )


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    if args.refresh:
        print(compile_refresh_pipeline(config, args.image, args.output))
    else:
        print(compile_pipeline(config, args.image, args.output, config.trainer.bert))


if __name__ == "__main__":
    main()
