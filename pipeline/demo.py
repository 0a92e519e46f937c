"""`make demo`: runs the whole pipeline locally and prints what it produced.

    scripts/env python -m pipeline.demo [--data DATA_DIR] [--output demo-run] [--bert NAME_OR_DIR]

Without --data it generates the deterministic synthetic dataset into <output>/data first. It ends with the
evaluation summary (overall and by head/tail target item), the blessing decision, the pushed model's path and
a few example recommendations from the pushed model's `recommend` signature.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from pipeline import configs, local_runner, progress, run_results, synthetic_data  # noqa: E402


def _stage(message: str) -> None:
    print(f"\n=== {message}", flush=True)


def prepare_data(data_dir: str | None, output_dir: str) -> str:
    if data_dir:
        return os.path.abspath(data_dir)
    data_dir = os.path.join(output_dir, "data")
    counts = synthetic_data.generate(data_dir)
    print(f"synthetic dataset in {data_dir}: {json.dumps(counts)}")
    return data_dir


def show_recommendations(results: run_results.RunResults, num_users: int, k: int) -> None:
    examples = results.eval_positives(num_users)
    titles = results.catalog_titles()
    recommend = run_results.load_recommend(results.pushed_model_dir())
    for example in examples:
        ids, scores, is_tail = recommend(example["user_id"], example["history"], k)
        print(f"\nuser {example['user_id']} — recent history:")
        for item in example["history"][-3:]:
            print(f"    {item}  {titles.get(item, '?')[:70]}")
        print(f"  held-out next item: {example['item_id']}  {titles.get(example['item_id'], '?')[:70]}")
        print(f"  top {k}:")
        for item, score, tail in zip(ids, scores, is_tail, strict=True):
            mark = "*" if item == example["item_id"] else " "
            group = "tail" if tail else "head"
            print(f"  {mark} {item:>12}  {score:7.3f}  {group}  {titles.get(item, '?')[:60]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic data)")
    parser.add_argument("--output", default="demo-run")
    parser.add_argument("--bert", default=configs.DEFAULT_BERT)
    parser.add_argument("--trainer-config", default="{}", help="JSON of trainer.config.TrainerConfig fields")
    parser.add_argument("--users", type=int, default=3, help="users to show recommendations for")
    args = parser.parse_args(argv)
    progress.show_progress()

    output_dir = os.path.abspath(args.output)
    started = time.time()
    _stage("data")
    data_dir = prepare_data(args.data, output_dir)
    config = configs.PipelineConfig(
        data_dir=data_dir, output_dir=output_dir, bert=args.bert, trainer=json.loads(args.trainer_config)
    )
    _stage(f"running the TFX pipeline (LocalDagRunner, Beam DirectRunner) into {output_dir}")
    local_runner.run(config)
    results = run_results.RunResults(output_dir)

    _stage("evaluation (TFMA, eval split)")
    print(results.evaluation_table())
    blessed = results.blessed()
    print(f"\nblessed: {blessed}")
    if blessed:
        print(f"pushed:  {results.pushed_model_dir()}")
        _stage("example recommendations (pushed model, `recommend` signature; * = the held-out item)")
        show_recommendations(results, args.users, config.eval_gate.top_k)
    else:
        pushed = sorted(glob.glob(os.path.join(configs.run_paths(output_dir)["serving_model_dir"], "*")))
        print(f"not pushed (the thresholds in pipeline/configs.py were not met); earlier pushes: {pushed}")
    print(f"\ndone in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
