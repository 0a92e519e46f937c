"""Reads what a local pipeline run produced, through its ML Metadata store: evaluation, blessing, push."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import ml_metadata as mlmd
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from pipeline import configs
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
        rows = self.evaluation()
        metric_names = sorted({m for _, values in rows for m in values})
        lines = ["| slice | " + " | ".join(metric_names) + " |", "|---" * (len(metric_names) + 1) + "|"]
        for name, values in rows:
            cells = [f"{values[m]:.4f}" if m in values else "" for m in metric_names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

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
                    "user_id": feature[features.USER_ID].bytes_list.value[0].decode(),
                    "item_id": feature[features.ITEM_ID].bytes_list.value[0].decode(),
                    "history": [v.decode() for v in feature[features.HISTORY].bytes_list.value],
                }
            )
            if len(found) == count:
                break
        return found


def load_recommend(
    model_dir: str,
) -> Callable[..., tuple[list[str], list[float], list[int]]]:
    """Wraps the SavedModel's `recommend` signature for one user.

    The returned `call(user_id, history, k, mmr_lambda=0.0, xquad_lambda=0.0)` gives (item ids, scores,
    tail flags), without the "" padding slots of a user with fewer than k eligible items.
    """
    recommend = tf.saved_model.load(model_dir).signatures[features.RECOMMEND_SIGNATURE]

    def call(user_id: str, history: list[str], k: int, mmr_lambda: float = 0.0,
             xquad_lambda: float = 0.0) -> tuple[list[str], list[float], list[int]]:
        out = recommend(**{
            features.USER_ID: tf.constant([user_id]),
            features.HISTORY: tf.constant([history or [""]]),
            features.K: tf.constant(k, dtype=tf.int32),
            features.MMR_LAMBDA: tf.constant(mmr_lambda, dtype=tf.float32),
            features.XQUAD_LAMBDA: tf.constant(xquad_lambda, dtype=tf.float32),
        })
        ids = [v.decode() for v in out[features.ITEM_IDS].numpy()[0]]
        keep = [i for i, item in enumerate(ids) if item]
        scores = out[features.SCORES].numpy()[0].tolist()
        is_tail = out[features.IS_TAIL].numpy()[0].tolist()
        return [ids[i] for i in keep], [scores[i] for i in keep], [is_tail[i] for i in keep]

    return call
