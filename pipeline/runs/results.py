"""Reads what a local pipeline run produced, through its ML Metadata store: evaluation, blessing, push."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable

import ml_metadata as mlmd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tabulate import tabulate
from tfx import v1 as tfx

from pipeline import configs
from serving.local_client import LocalClient
from serving.recommend_request import Knob, knob_names, with_knobs_off
from trainer import features


class RunResults:
    """The newest artifacts of each kind in a run folder's SQLite ML Metadata."""

    def __init__(self, output_dir: str):
        paths = configs.run_paths(output_dir)
        connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(paths["metadata_path"])
        self._store = mlmd.MetadataStore(connection)

    def latest(self, type_name: str) -> mlmd.proto.Artifact | None:
        artifacts = self._store.get_artifacts_by_type(type_name)
        return max(artifacts, key=lambda a: a.id) if artifacts else None

    def _uri(self, type_name: str) -> str:
        artifact = self.latest(type_name)
        if artifact is None:
            raise FileNotFoundError(f"no {type_name} artifact in this run's ML Metadata")
        return artifact.uri

    def example_gen_summary(self) -> dict:
        """The latest InteractionsExampleGen's summary.json (rows read and rejected, examples, logs)."""
        from components.example_gen import SUMMARY_FILE, RejectedRows

        with open(os.path.join(self._uri(RejectedRows.TYPE_NAME), SUMMARY_FILE), encoding="utf-8") as f:
            return json.load(f)

    def validation_failures(self) -> list[str]:
        """Why the latest evaluation did not bless: one line per failed threshold (slice, metric, value)."""
        result = tfma.load_validation_result(self._uri("ModelEvaluation"))
        lines = []
        for per_slice in result.metric_validations_per_slice:
            keys = per_slice.slice_key.single_slice_keys
            where = ", ".join(
                f"{k.column}={k.int64_value or k.bytes_value.decode() or k.float_value}" for k in keys
            )
            for failure in per_slice.failures:
                name = failure.metric_key.name + (" change" if failure.metric_key.is_diff else "")
                value = failure.metric_value.double_value.value
                lines.append(f"{where or 'overall'}: {name} {value:+.4f} (threshold {_threshold(failure)})")
        return lines

    def blessed(self) -> bool:
        blessing = self.latest("ModelBlessing")
        return bool(blessing and blessing.custom_properties["blessed"].int_value == 1)

    def pushed_model_dir(self) -> str:
        pushed = self.latest("PushedModel")
        if pushed is None or "pushed_destination" not in pushed.custom_properties:
            raise FileNotFoundError("nothing was pushed in this run")
        return pushed.custom_properties["pushed_destination"].string_value

    def evaluation(self) -> list[tuple[str, dict[str, float]]]:
        """(slice name, {metric: value}) for every slice of the newest ModelEvaluation."""
        result = tfma.load_eval_result(self._uri("ModelEvaluation"))
        rows = []
        for slice_key, metrics in result.slicing_metrics:
            name = ", ".join(f"{k}={v}" for k, v in slice_key) or "overall"
            values = {
                metric: value.get("doubleValue", float("nan"))
                for metric, value in metrics[""][""].items()
                if isinstance(value, dict)
            }
            rows.append((name, values))
        return sorted(rows)

    def evaluation_table(self) -> str:
        """The evaluation as a GitHub markdown table: one row per slice, metrics to 4 decimals."""
        rows = self.evaluation()
        metric_names = sorted({m for _, values in rows for m in values})
        cells = [
            [name, *(f"{values[m]:.4f}" if m in values else "" for m in metric_names)]
            for name, values in rows
        ]
        return tabulate(cells, headers=["slice", *metric_names], tablefmt="github", disable_numparse=True)

    def _split_examples(self, output_key: str, split: str) -> list[tf.train.Example]:
        """Parsed tf.Examples of ExampleGen's `output_key` output (`examples` or `catalog`)."""
        for artifact in sorted(self._store.get_artifacts_by_type("Examples"), key=lambda a: -a.id):
            files = glob.glob(os.path.join(artifact.uri, f"Split-{split}", "*"))
            if files and f"/{output_key}/" in artifact.uri:
                dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
                return [tf.train.Example.FromString(record.numpy()) for record in dataset]
        raise FileNotFoundError(f"no ExampleGen `{output_key}` output with a `{split}` split")

    def catalog_titles(self) -> dict[str, str]:
        titles = {}
        for example in self._split_examples("catalog", "catalog"):
            feature = example.features.feature
            item = feature[features.ITEM_ID].bytes_list.value[0].decode()
            titles[item] = feature[features.TITLE].bytes_list.value[0].decode()
        return titles

    def eval_positives(self, count: int) -> list[dict]:
        """The first `count` positive eval examples as {user_id, item_id, history}."""
        found = []
        for example in self._split_examples("examples", "eval"):
            feature = example.features.feature
            if feature[features.LABEL].float_list.value[0] < 0.5:
                continue
            found.append(
                {
                    features.USER_ID: feature[features.USER_ID].bytes_list.value[0].decode(),
                    features.ITEM_ID: feature[features.ITEM_ID].bytes_list.value[0].decode(),
                    features.HISTORY: [v.decode() for v in feature[features.HISTORY].bytes_list.value],
                }
            )
            if len(found) == count:
                break
        return found


RecommendedList = tuple[list[str], list[float], list[int]]  # item ids, scores, tail flags


def _threshold(failure) -> str:
    threshold = failure.metric_threshold
    if threshold.HasField("change_threshold"):
        return f"change >= {threshold.change_threshold.absolute.value:+g}"
    return f">= {threshold.value_threshold.lower_bound.value:g}"


def load_recommend(model_dir: str) -> Callable[..., RecommendedList]:
    """The SavedModel's `recommend` signature for one user, through the in-process client.

    The returned `call(user_id, history, k, **knobs)` (a knob not given is off, e.g. `mmr_lambda=0.2`) gives
    (item ids, scores, tail flags), without the "" padding slots of a user with fewer than k eligible items.
    """
    client = LocalClient(model_dir)
    names = knob_names(client.scalar_inputs(features.RECOMMEND_SIGNATURE))

    def call(user_id: str, history: list[str], k: int, **knobs: Knob) -> RecommendedList:
        rows = client.recommend([user_id], [history], k, **with_knobs_off(knobs, names)).rows(0)
        return (
            [row[features.ITEM_IDS] for row in rows],
            [row[features.SCORES] for row in rows],
            [row[features.IS_TAIL] for row in rows],
        )

    return call
