"""The TFMA EvalConfig that gates pushing: absolute thresholds plus no regression against the baseline."""

from __future__ import annotations

import json

# The config protos themselves: `tfma.MetricConfig` & co. exist only once TFX has been imported.
from tensorflow_model_analysis.constants import TF_GENERIC
from tensorflow_model_analysis.proto import config_pb2 as tfma_config

from pipeline import configs
from trainer import features

# The retrieval metrics of evaluation/tfma_metrics.py (configs.METRICS_MODULE), by class name.
RECALL = "RecallAtK"
APLT = "APLTAtK"
TAIL_COVERAGE = "TailCoverageAtK"


def _lower_bound(value: float) -> tfma_config.MetricThreshold:
    bound = tfma_config.GenericValueThreshold(lower_bound={"value": value})
    return tfma_config.MetricThreshold(value_threshold=bound)


def _gated(lower_bound: float, tolerance: float) -> tfma_config.MetricThreshold:
    """An absolute floor, and at most `tolerance` worse than the baseline model."""
    threshold = _lower_bound(lower_bound)
    threshold.change_threshold.CopyFrom(
        tfma_config.GenericChangeThreshold(
            direction=tfma_config.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -tolerance}
        )
    )
    return threshold


def _retrieval_metric(class_name: str, k: int, threshold: tfma_config.MetricThreshold | None = None):
    metric = tfma_config.MetricConfig(
        class_name=class_name, module=configs.METRICS_MODULE, config=json.dumps({"k": k})
    )
    if threshold is not None:
        metric.threshold.CopyFrom(threshold)
    return metric


def make_eval_config(gate: configs.EvalGateConfig) -> tfma_config.EvalConfig:
    """AUC of the ranking head and Recall/APLT/TailCoverage@K of retrieval, overall and by head/tail item."""
    metrics = [
        tfma_config.MetricConfig(class_name="ExampleCount"),
        tfma_config.MetricConfig(class_name="AUC", threshold=_gated(gate.min_auc, gate.regression_tolerance)),
        _retrieval_metric(RECALL, gate.top_k, _gated(0.0, gate.regression_tolerance)),
        _retrieval_metric(APLT, gate.top_k),
        _retrieval_metric(TAIL_COVERAGE, gate.top_k, _lower_bound(gate.min_tail_coverage)),
    ]
    return tfma_config.EvalConfig(
        model_specs=[
            tfma_config.ModelSpec(
                # A plain SavedModel of signatures: said, so TFMA does not first try to load it as Keras.
                model_type=TF_GENERIC,
                signature_name=features.SERVING_DEFAULT_SIGNATURE,
                label_key=features.LABEL,
                prediction_key=features.SCORE,
                # Transformed features (item_is_tail) for slicing come from this signature.
                preprocessing_function_names=[features.TRANSFORM_FEATURES_SIGNATURE],
            )
        ],
        slicing_specs=[
            tfma_config.SlicingSpec(),
            tfma_config.SlicingSpec(feature_keys=[features.ITEM_IS_TAIL]),
        ],
        metrics_specs=[tfma_config.MetricsSpec(metrics=metrics)],
    )
