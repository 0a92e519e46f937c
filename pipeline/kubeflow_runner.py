"""Compiles the same pipeline to a Kubeflow Pipelines v2 / Vertex AI Pipelines spec (JSON).

    scripts/env python -m pipeline.kubeflow_runner --output tailtower_pipeline.json \
        --image gcr.io/PROJECT/tailtower:latest --data gs://BUCKET/data --run-root gs://BUCKET/tailtower

Submit the JSON with the KFP client or a Vertex `PipelineJob`. Beam-heavy components run on
Dataflow when given `--beam-arg=--runner=DataflowRunner --beam-arg=--project=... --beam-arg=--region=...`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse  # noqa: E402

from tfx import v1 as tfx  # noqa: E402

from pipeline import configs  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402

# Where the Dockerfile puts the pretrained MiniLM folder inside the image.
IMAGE_BERT_DIR = "/opt/tailtower/models/all-minilm-l6-v2"


def compile_pipeline(config: configs.PipelineConfig, image: str, output_file: str, bert_dir: str) -> str:
    """Writes the pipeline spec JSON to `output_file` and returns its path."""
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    runner.run(create_pipeline(config, bert_dir), write_out=True)
    return output_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="tailtower_pipeline.json", help="pipeline spec JSON to write")
    parser.add_argument("--image", default="tailtower:latest", help="container image built from ./Dockerfile")
    parser.add_argument("--data", default="gs://YOUR_BUCKET/data", help="dataset folder the workers can read")
    parser.add_argument("--run-root", default="gs://YOUR_BUCKET/tailtower", help="pipeline root + serving")
    parser.add_argument("--bert-dir", default=IMAGE_BERT_DIR, help="BERT folder as the workers see it")
    parser.add_argument("--beam-arg", action="append", default=[], help="Beam pipeline arg (repeatable)")
    args = parser.parse_args(argv)
    config = configs.PipelineConfig(
        data_dir=args.data, output_dir=args.run_root, bert=args.bert_dir, beam_pipeline_args=args.beam_arg
    )
    print(compile_pipeline(config, args.image, args.output, args.bert_dir))


if __name__ == "__main__":
    main()
