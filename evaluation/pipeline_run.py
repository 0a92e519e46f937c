"""Training our system on a split: a derived dataset folder, then the project's own TFX pipeline.

The derived folder holds each user's fit positives (everything before the test target, minus what the
protocol made cold) in the normalized layout, one row each in the split's order, so that the pipeline's
own per-user split (last positive → `eval`) turns the validation item into its eval example. Every positive
written is already one, so its rating is left empty (implicit feedback): the pipeline's rating threshold
cannot drop it a second time. The fit negatives (rated below the harness's threshold) follow with their
ratings, and the pipeline is given the same threshold, so its ExampleGen drops them from the examples and
counts them per catalog item (a seen item is not a new one). The catalog is the dataset's valid catalog, all
of it.

The Evaluator's gates are opened (min AUC and min tail coverage 0) so that every trained model is pushed
and measured: the harness reports what the model does, whatever the gate would have decided.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from components import interactions
from components.data_files import Item
from components.example_gen_config import ExampleGenConfig
from evaluation.data import RATING_THRESHOLD, Dataset
from evaluation.split import Split

if TYPE_CHECKING:
    from trainer.config import TrainerConfig

OPEN_GATE = {"min_auc": 0.0, "min_tail_coverage": 0.0}


def write_training_dataset(dataset: Dataset, split: Split, out_dir: str | os.PathLike) -> Path:
    """Writes out_dir/interactions.tsv (the split's fit rows) and out_dir/items.jsonl; returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["user_id\titem_id\trating\ttime"]
    for user in split.users:
        lines += [f"{p.user_id}\t{p.item_id}\t\t{p.time}" for p in split.fit_rows[user]]
    for rows in split.fit_negatives.values():
        lines += [f"{n.user_id}\t{n.item_id}\t{n.rating!r}\t{n.time}" for n in rows]  # exact: stays below
    (out / "interactions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        f.writelines(_item_json(item) + "\n" for item in dataset.items)
    return out


def _item_json(item: Item) -> str:
    row = {
        "item_id": item.item_id,
        "title": item.title,
        "text": item.text,
        "brand": item.brand,
        "categories": list(item.categories),
        "price": item.price,
    }
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def train(
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    trainer: TrainerConfig,
    reuse: bool = False,
    rating_threshold: float = RATING_THRESHOLD,
) -> str:
    """Runs the pipeline on `data_dir` into `run_dir` (BERT: `trainer.bert`) and returns the pushed model's
    folder. rating_threshold: the one the derived data's negatives were split off with.

    With `reuse`, a run folder that already holds a pushed model is not retrained.
    """
    # Imported on use: the baselines-only harness needs neither TFX nor TensorFlow.
    from pipeline import configs, local_runner
    from pipeline.runs import results as run_results

    run_dir = os.path.abspath(run_dir)
    if reuse and os.path.exists(configs.run_paths(run_dir)["metadata_path"]):
        try:
            return run_results.RunResults(run_dir).pushed_model_dir()
        except FileNotFoundError:
            pass
    config = configs.PipelineConfig(
        data_dir=os.path.abspath(data_dir),
        output_dir=run_dir,
        trainer=trainer,
        example_gen=ExampleGenConfig(rating_threshold=rating_threshold),
        eval_gate=configs.EvalGateConfig(top_k=trainer.top_k, **OPEN_GATE),
        # Fit on every interaction before the test target, as the baselines do: the pipeline's own eval split
        # (each user's validation item) is training data here, not a hold-out.
        train_splits=list(interactions.SPLITS),
        # One cache for every run of the harness: the protocols share the catalog's text.
        encoding_cache=os.path.join(os.path.dirname(run_dir), configs.ENCODING_CACHE_DIRNAME),
    )
    local_runner.run(config)
    return run_results.RunResults(run_dir).pushed_model_dir()
