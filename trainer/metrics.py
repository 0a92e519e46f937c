"""Custom TFMA metrics over the retrieval output of `serving_default`: Recall@K, APLT@K, TailCoverage@K.

The serving signature returns, per eval example, `top_k_ids` [K] (bytes), `top_k_is_tail` [K] (0/1) and
`num_tail_items` (the catalog's tail size, the same on every row). Only positive examples (label 1) count: the
negatives in the eval split exist for the ranking head's AUC.

  Recall@K       = (# positives whose item_id is in their top-K) / (# positives)
  APLT@K         = mean over positives of (# tail items in the top-K) / K
  TailCoverage@K = |tail items in the top-K of at least one positive| / num_tail_items

Used from an EvalConfig as `tfma.MetricConfig(class_name="RecallAtK", module="trainer.metrics",
config='{"k": 10}')`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from trainer import features

TOP_K_IDS = features.TOP_K_IDS
TOP_K_IS_TAIL = features.TOP_K_IS_TAIL
NUM_TAIL_ITEMS = features.NUM_TAIL_ITEMS


@dataclass
class _Accumulator:
    positives: int = 0
    hits: int = 0
    tail_share_sum: float = 0.0
    tail_items: set[bytes] = field(default_factory=set)
    num_tail_items: int = 0


def _first(value: Any) -> Any:
    return np.asarray(value).reshape(-1)[0]


def _predictions(element: metric_types.StandardMetricInputs, model_name: str | None) -> dict[str, np.ndarray]:
    predictions = element.get_predictions(model_name)
    if not isinstance(predictions, dict) or TOP_K_IDS not in predictions:
        raise ValueError(
            f"tailtower retrieval metrics need the model's `{TOP_K_IDS}`, `{TOP_K_IS_TAIL}` and "
            f"`{NUM_TAIL_ITEMS}` outputs; got predictions {type(predictions).__name__}"
        )
    return predictions


class _RetrievalCombiner(beam.CombineFn):
    """Accumulates hit counts, tail shares and the set of tail items shown, then emits one metric."""

    def __init__(self, key: metric_types.MetricKey, k: int, metric: str):
        self._key = key
        # With a baseline model, labels and predictions are keyed by model name ("candidate", "baseline").
        self._model_name = key.model_name or None
        self._k = k
        self._metric = metric

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs) -> _Accumulator:
        if _first(element.get_labels(self._model_name)) < 0.5:
            return acc
        predictions = _predictions(element, self._model_name)
        top_ids = np.asarray(predictions[TOP_K_IDS]).reshape(-1)[: self._k]
        is_tail = np.asarray(predictions[TOP_K_IS_TAIL]).reshape(-1)[: self._k].astype(bool)
        target = _first(element.features[features.ITEM_ID])
        acc.positives += 1
        acc.hits += int(target in set(top_ids.tolist()))
        acc.tail_share_sum += float(is_tail.sum()) / self._k
        acc.tail_items.update(top_ids[is_tail].tolist())
        acc.num_tail_items = max(acc.num_tail_items, int(_first(predictions[NUM_TAIL_ITEMS])))
        return acc

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        merged = _Accumulator()
        for acc in accumulators:
            merged.positives += acc.positives
            merged.hits += acc.hits
            merged.tail_share_sum += acc.tail_share_sum
            merged.tail_items |= acc.tail_items
            merged.num_tail_items = max(merged.num_tail_items, acc.num_tail_items)
        return merged

    def extract_output(self, acc: _Accumulator) -> dict[metric_types.MetricKey, float]:
        if self._metric == "recall":
            value = acc.hits / acc.positives if acc.positives else float("nan")
        elif self._metric == "aplt":
            value = acc.tail_share_sum / acc.positives if acc.positives else float("nan")
        else:
            value = len(acc.tail_items) / acc.num_tail_items if acc.num_tail_items else 0.0
        return {self._key: value}


def _computations(
    metric: str,
    name: str,
    k: int,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        key = metric_types.MetricKey(name=name, model_name=model_name)
        preprocessor = metric_types.FeaturePreprocessor(
            feature_keys=[features.ITEM_ID], model_names=[model_name] if model_name else None
        )
        computations.append(
            metric_types.MetricComputation(
                keys=[key], preprocessors=[preprocessor], combiner=_RetrievalCombiner(key, k, metric)
            )
        )
    return computations


def _recall(name: str = "recall", k: int = 10, model_names=None, output_names=None):
    return _computations("recall", name, k, model_names, output_names)


def _aplt(name: str = "aplt", k: int = 10, model_names=None, output_names=None):
    return _computations("aplt", name, k, model_names, output_names)


def _tail_coverage(name: str = "tail_coverage", k: int = 10, model_names=None, output_names=None):
    return _computations("tail_coverage", name, k, model_names, output_names)


class RecallAtK(metric_types.Metric):
    """Share of positive eval examples whose item is in the model's top-K."""

    def __init__(self, k: int = 10, name: str | None = None):
        super().__init__(_recall, name=name or f"recall@{k}", k=k)


class APLTAtK(metric_types.Metric):
    """Average percentage of long-tail items in the top-K lists of positive eval examples."""

    def __init__(self, k: int = 10, name: str | None = None):
        super().__init__(_aplt, name=name or f"aplt@{k}", k=k)


class TailCoverageAtK(metric_types.Metric):
    """Share of the catalog's tail items shown in at least one top-K list."""

    def __init__(self, k: int = 10, name: str | None = None):
        super().__init__(_tail_coverage, name=name or f"tail_coverage@{k}", k=k)
