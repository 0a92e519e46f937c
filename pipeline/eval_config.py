"""The TFMA EvalConfig that gates pushing: absolute thresholds plus no regression against the baseline."""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from pipeline import configs
from trainer import features

# The retrieval metrics of trainer/metrics.py, by class name.
RECALL = "RecallAtK"
APLT = "APLTAtK"
TAIL_COVERAGE = "TailCoverageAtK"


def _lower_bound(value: float) -> tfma.MetricThreshold:
    return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(lower_bound={"value": value}))


def _gated(lower_bound: float, tolerance: float) -> tfma.MetricThreshold:
    """An absolute floor, and at most `tolerance` worse than the baseline model."""
    threshold = _lower_bound(lower_bound)
    threshold.change_threshold.CopyFrom(
        tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -tolerance}
        )
    )
    return threshold


def _retrieval_metric(class_name: str, k: int, threshold: tfma.MetricThreshold | None = None):
    metric = tfma.MetricConfig(
        class_name=class_name, module=configs.METRICS_MODULE, config=json.dumps({"k": k})
    )
    if threshold is not None:
        metric.threshold.CopyFrom(threshold)
    return metric


def make_eval_config(gate: configs.EvalGateConfig) -> tfma.EvalConfig:
    """AUC of the ranking head and Recall/APLT/TailCoverage@K of retrieval, overall and by head/tail item."""
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC", threshold=_gated(gate.min_auc, gate.regression_tolerance)),
        _retrieval_metric(RECALL, gate.top_k, _gated(0.0, gate.regression_tolerance)),
        _retrieval_metric(APLT, gate.top_k),
        _retrieval_metric(TAIL_COVERAGE, gate.top_k, _lower_bound(gate.min_tail_coverage)),
    ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=features.LABEL,
                prediction_key="score",
                # Transformed features (item_is_tail) for slicing come from this signature.
                preprocessing_function_names=["transform_features"],
            )
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.ITEM_IS_TAIL])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )
