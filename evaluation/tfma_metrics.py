"""Custom TFMA metrics over the retrieval output of `serving_default`: Recall@K, APLT@K, TailCoverage@K.

The serving signature returns, per eval example, `top_k_ids` [K'] (bytes, "" = padding), `top_k_is_tail`
[K'] (0/1) and `num_tail_items` (the catalog's tail size, the same on every row). Only positive examples
(label 1) count: the negatives in the eval split exist for the ranking head's AUC. Each metric reads the
first K of the K' served items, and a served list shorter than K (TrainerConfig.top_k < the gate's top_k)
is an error, not a silently lower score.

The metrics are evaluation/metrics.py's `recall`, `aplt` and `tail_coverage` (its docstring defines them),
over the positives' served lists: each list's hit and tail share come from `evaluation.metrics.hits` and
`tail_shares`; TailCoverage@K divides by the model's `num_tail_items`, the catalog's tail size.

Used from an EvalConfig as `tfma.MetricConfig(class_name="RecallAtK", module="evaluation.tfma_metrics",
config='{"k": 10}')`; TFMA imports the module by that path on the Beam workers, where the package is
installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from evaluation import metrics
from trainer import features


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
    if not isinstance(predictions, dict) or features.TOP_K_IDS not in predictions:
        raise ValueError(
            f"tailtower retrieval metrics need the model's `{features.TOP_K_IDS}`, "
            f"`{features.TOP_K_IS_TAIL}` and `{features.NUM_TAIL_ITEMS}` outputs; "
            f"got predictions {type(predictions).__name__}"
        )
    return predictions


def _recall(acc: _Accumulator) -> float:
    return acc.hits / acc.positives if acc.positives else float("nan")


def _aplt(acc: _Accumulator) -> float:
    return acc.tail_share_sum / acc.positives if acc.positives else float("nan")


def _tail_coverage(acc: _Accumulator) -> float:
    return len(acc.tail_items) / acc.num_tail_items if acc.num_tail_items else 0.0


class _RetrievalCombiner(beam.CombineFn):
    """Accumulates hits, tail shares and the tail items shown over the positives; emits one metric."""

    def __init__(self, key: metric_types.MetricKey, k: int, value: Callable[[_Accumulator], float]):
        self._key = key
        # With a baseline model, labels and predictions are keyed by model name ("candidate", "baseline").
        self._model_name = key.model_name or None
        self._k = k
        self._value = value

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def _served_list(self, predictions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The first k served ids [1, k] and their tail flags [1, k]."""
        ids = np.asarray(predictions[features.TOP_K_IDS]).reshape(-1)
        if len(ids) < self._k:
            raise ValueError(
                f"{self._key.name}: the model serves {len(ids)} items per list (`{features.TOP_K_IDS}`), "
                f"fewer than K={self._k}; train with TrainerConfig.top_k >= the eval gate's top_k ({self._k})"
            )
        is_tail = np.asarray(predictions[features.TOP_K_IS_TAIL]).reshape(-1)[: self._k].astype(bool)
        return ids[None, : self._k], is_tail[None, :]

    def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs) -> _Accumulator:
        if _first(element.get_labels(self._model_name)) < 0.5:
            return acc
        predictions = _predictions(element, self._model_name)
        ids, is_tail = self._served_list(predictions)
        valid = metrics.valid_slots(ids)
        target = np.asarray([_first(element.features[features.ITEM_ID])], dtype=object)
        acc.positives += 1
        acc.hits += int(metrics.hits(ids, target)[0])
        acc.tail_share_sum += float(metrics.tail_shares(is_tail, valid)[0])
        acc.tail_items.update(ids[is_tail & valid].tolist())
        acc.num_tail_items = max(acc.num_tail_items, int(_first(predictions[features.NUM_TAIL_ITEMS])))
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
        return {self._key: self._value(acc)}


ComputationsFn = Callable[..., metric_types.MetricComputations]


def _computations_fn(value: Callable[[_Accumulator], float]) -> ComputationsFn:
    """A TFMA `create_computations_fn`: one combiner per model (candidate and baseline)."""

    def computations(
        name: str, k: int, model_names: list[str] | None = None, output_names: list[str] | None = None
    ) -> metric_types.MetricComputations:
        result = []
        for model_name in model_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name)
            preprocessor = metric_types.FeaturePreprocessor(
                feature_keys=[features.ITEM_ID], model_names=[model_name] if model_name else None
            )
            result.append(
                metric_types.MetricComputation(
                    keys=[key], preprocessors=[preprocessor], combiner=_RetrievalCombiner(key, k, value)
                )
            )
        return result

    return computations


class RecallAtK(metric_types.Metric):
    """Share of positive eval examples whose item is in the model's top-K (`recall@K`)."""

    def __init__(self, k: int, name: str | None = None):
        super().__init__(_computations_fn(_recall), name=name or f"recall@{k}", k=k)


class APLTAtK(metric_types.Metric):
    """Mean over positive eval examples of the top-K list's share of long-tail items (`aplt@K`)."""

    def __init__(self, k: int, name: str | None = None):
        super().__init__(_computations_fn(_aplt), name=name or f"aplt@{k}", k=k)


class TailCoverageAtK(metric_types.Metric):
    """Share of the catalog's tail items shown in at least one top-K list (`tail_coverage@K`)."""

    def __init__(self, k: int, name: str | None = None):
        super().__init__(_computations_fn(_tail_coverage), name=name or f"tail_coverage@{k}", k=k)
