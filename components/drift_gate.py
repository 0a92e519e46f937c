"""Stops a run before training when its training data has drifted from the previous run's past a threshold.

A retrain on fresh data (a new dataset drop, or the service's logs) should look like the last one; when it
does not — a broken log export, a catalog swapped under the shop, a bot flooding the events — training on it
silently ships a different model. This gate compares the train split's statistics (StatisticsGen) of this
run with those of the previous run (a Resolver of the latest ExampleStatistics, resolved before this run's
StatisticsGen) on:
  item_id   item popularity: L-infinity distance of the item distributions (TFDV's drift comparator)
  user_id   user activity: the same over users
and, from the catalog's statistics (CatalogStatisticsGen, against the previous run's), on:
  text      the catalog's mean item text length: relative change |new / old − 1| (per catalog item; before
            the catalog had its own statistics it was a mean over the train examples)
and fails naming the feature and the distance when one is past its threshold (`DriftThresholds`). The
first run (nothing to compare with) passes. Distances are logged either way.
"""

# No `from __future__ import annotations`: the TFX component decorator reads real annotations.
import dataclasses

import tensorflow_data_validation as tfdv
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import Artifact

from components.data_report import CATALOG
from components.drift_gate_config import DriftThresholds
from components.interactions import TRAIN
from trainer import features


@dataclasses.dataclass(frozen=True)
class Drift:
    check: str  # a DriftThresholds field
    feature: str
    distance: float
    threshold: float
    detail: str = ""

    @property
    def failed(self) -> bool:
        return 0 < self.threshold < self.distance

    def describe(self) -> str:
        verdict = "above" if self.failed else "within"
        line = f"{self.feature} ({self.check}): distance {self.distance:.4g}, {verdict} threshold "
        return line + f"{self.threshold:g}" + (f"; {self.detail}" if self.detail else "")


_MOST_MOVED = "The feature value with maximum difference is: "  # in TFDV's L-infinity description


def _linf_schema() -> schema_pb2.Schema:
    """item_id and user_id with an L-infinity drift comparator. Its threshold is ~0 so that TFDV measures
    and describes every distance; the gate applies DriftThresholds itself."""
    schema = schema_pb2.Schema()
    for name in (features.ITEM_ID, features.USER_ID):
        feature = schema.feature.add(name=name, type=schema_pb2.BYTES)
        feature.drift_comparator.infinity_norm.threshold = 1e-9
    return schema


def _linf_distances(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, tuple[float, str]]:
    """feature → (L-infinity distance, the value that moved most) for item_id and user_id."""
    anomalies = tfdv.validate_statistics(current, _linf_schema(), previous_statistics=previous)
    distances = {
        "/".join(info.path.step): max((m.value for m in info.drift_measurements), default=0.0)
        for info in anomalies.drift_skew_info
    }
    result = {}
    for feature in (features.ITEM_ID, features.USER_ID):
        description = anomalies.anomaly_info[feature].description if feature in anomalies.anomaly_info else ""
        _, marker, value = description.partition(_MOST_MOVED)
        result[feature] = (float(distances.get(feature, 0.0)), f"moved most: {value}" if marker else "")
    return result


def _mean_text_length(stats: statistics_pb2.DatasetFeatureStatisticsList) -> float | None:
    for feature in stats.datasets[0].features:
        if list(feature.path.step) == [features.TEXT] or feature.name == features.TEXT:
            return float(feature.string_stats.avg_length)
    return None


def measure(
    current: statistics_pb2.DatasetFeatureStatisticsList,
    previous: statistics_pb2.DatasetFeatureStatisticsList,
    thresholds: DriftThresholds,
    catalog: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    previous_catalog: statistics_pb2.DatasetFeatureStatisticsList | None = None,
) -> list[Drift]:
    """Every check's distance: popularity and activity between two train-split statistics, text length
    between two catalogs' statistics (only when both are given)."""
    linf = _linf_distances(current, previous)
    drifts = [
        Drift(check, feature, linf[feature][0], threshold, linf[feature][1])
        for check, feature, threshold in (
            ("item_popularity", features.ITEM_ID, thresholds.item_popularity),
            ("user_activity", features.USER_ID, thresholds.user_activity),
        )
    ]
    if catalog is None or previous_catalog is None:
        return drifts
    now, before = _mean_text_length(catalog), _mean_text_length(previous_catalog)
    if now is not None and before:
        change = abs(now / before - 1.0)
        detail = f"mean length {before:.1f} → {now:.1f} bytes"
        drifts.append(Drift("text_length", features.TEXT, change, thresholds.text_length, detail))
    return drifts


def check(drifts: list[Drift]) -> None:
    """Raises ValueError naming every check past its threshold."""
    failed = [d.describe() for d in drifts if d.failed]
    if failed:
        raise ValueError(
            "the training data drifted from the previous run's past the drift thresholds; check the new data "
            "(or raise PipelineConfig.drift_thresholds):\n  " + "\n  ".join(failed)
        )


def _split_statistics(
    artifact: Artifact | None, split: str
) -> statistics_pb2.DatasetFeatureStatisticsList | None:
    if artifact is None:
        return None
    return stats_artifact_utils.load_statistics(artifact, split).proto()


@tfx.dsl.components.component
def DriftGate(  # noqa: N802 -- TFX names components by their function
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    previous_statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
    catalog_statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
    previous_catalog_statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
    thresholds: tfx.dsl.components.Parameter[str] = "{}",
) -> None:
    """Passes when there is no previous run or every distance is within its threshold; raises otherwise."""
    if previous_statistics is None:
        logging.info("DriftGate: no previous statistics (first run): nothing to compare")
        return
    if catalog_statistics is None or previous_catalog_statistics is None:
        logging.info("DriftGate: no previous catalog statistics (an older run): the text check is skipped")
    drifts = measure(
        _split_statistics(statistics, TRAIN),
        _split_statistics(previous_statistics, TRAIN),
        DriftThresholds.from_json(thresholds),
        _split_statistics(catalog_statistics, CATALOG),
        _split_statistics(previous_catalog_statistics, CATALOG),
    )
    for drift in drifts:
        logging.info("DriftGate: %s", drift.describe())
    check(drifts)
