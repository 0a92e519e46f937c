"""`make demo`: runs the whole pipeline locally and prints what it produced.

    scripts/env python -m pipeline.demo [--data DATA_DIR] [--output demo-run] [--bert NAME_OR_DIR]
        [--trainer-config '{"epochs": 4}']

Without --data it generates the deterministic synthetic dataset into <output>/data first. It ends with the
evaluation summary (overall and by head/tail target item), the blessing decision, the pushed model's path and
a few example recommendations from the pushed model's `recommend` signature. The flags are checked before
anything runs (and before TFX and TensorFlow load).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse
import glob
import json
import time
from typing import TYPE_CHECKING

from pipeline import configs, local_runner
from pipeline.demo import synthetic_data
from pipeline.runs import progress
from serving.config import DEFAULT_OUTPUT
from trainer import features

if TYPE_CHECKING:  # loads TensorFlow and TFX: imported once the flags are checked
    from pipeline.runs import results as run_results

DATA_DIRNAME = "data"  # <output>/data: the synthetic dataset, when no --data is given


def stage(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def data_dir_of(args: argparse.Namespace) -> str:
    """--data, or <output>/data for the synthetic dataset."""
    return os.path.abspath(args.data or os.path.join(args.output, DATA_DIRNAME))


def prepare_data(args: argparse.Namespace, data_dir: str) -> None:
    """Generates the synthetic dataset into `data_dir` unless --data was given."""
    if not args.data:
        counts = synthetic_data.generate(data_dir)
        print(f"synthetic dataset in {data_dir}: {json.dumps(counts)}")


def show_recommendations(results: run_results.RunResults, num_users: int, k: int) -> None:
    from pipeline.runs import results as run_results

    examples = results.eval_positives(num_users)
    titles = results.catalog_titles()
    recommend = run_results.load_recommend(results.pushed_model_dir())
    for example in examples:
        user, history = example[features.USER_ID], example[features.HISTORY]
        held_out = example[features.ITEM_ID]
        ids, scores, is_tail = recommend(user, history, k)
        print(f"\nuser {user} — recent history:")
        for item in history[-3:]:
            print(f"    {item}  {titles.get(item, '?')[:70]}")
        print(f"  held-out next item: {held_out}  {titles.get(held_out, '?')[:70]}")
        print(f"  top {k}:")
        for item, score, tail in zip(ids, scores, is_tail, strict=True):
            mark = "*" if item == held_out else " "
            group = "tail" if tail else "head"
            print(f"  {mark} {item:>12}  {score:7.3f}  {group}  {titles.get(item, '?')[:60]}")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, configs.PipelineConfig]:
    """The flags and the checked PipelineConfig (a bad setting exits with a usage error naming it)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic data)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    local_runner.add_trainer_flags(parser)
    local_runner.add_logs_flags(parser)
    parser.add_argument("--users", type=int, default=3, help="users to show recommendations for")
    args = parser.parse_args(argv)
    try:
        config = configs.PipelineConfig(
            data_dir=data_dir_of(args),
            output_dir=os.path.abspath(args.output),
            trainer=configs.trainer_config(args.trainer_config, args.bert),
            **local_runner.logs_config(args),
        )
    except ValueError as e:
        parser.error(str(e))
    return args, config


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    from pipeline.runs import results as run_results  # TensorFlow, TFX: after the flags are checked

    progress.show_progress()
    output_dir = config.output_dir
    started = time.time()
    stage("data")
    prepare_data(args, config.data_dir)
    stage(f"running the TFX pipeline (LocalDagRunner, Beam DirectRunner) into {output_dir}")
    local_runner.run(config)
    results = run_results.RunResults(output_dir)

    stage("evaluation (TFMA, eval split)")
    print(results.evaluation_table())
    blessed = results.blessed()
    print(f"\nblessed: {blessed}")
    if blessed:
        print(f"pushed:  {results.pushed_model_dir()}")
        stage("example recommendations (pushed model, `recommend` signature; * = the held-out item)")
        show_recommendations(results, args.users, config.eval_gate.top_k)
    else:
        pushed = sorted(glob.glob(os.path.join(configs.run_paths(output_dir)["serving_model_dir"], "*")))
        print(f"not pushed (the thresholds in pipeline/configs.py were not met); earlier pushes: {pushed}")
    print(f"\ndone in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
