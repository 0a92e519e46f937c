"""The anomalies gate names split, feature and problem, and passes clean data."""

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts

from components import anomalies_gate


def _write_anomalies(tmp_path, per_split: dict[str, anomalies_pb2.Anomalies]):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = '["' + '","'.join(per_split) + '"]'
    for split, anomalies in per_split.items():
        folder = tmp_path / f"Split-{split}"
        folder.mkdir()
        (folder / anomalies_gate.ANOMALIES_FILENAME).write_bytes(anomalies.SerializeToString())
    return artifact


def _anomaly(feature: str, short: str, detail: str) -> anomalies_pb2.Anomalies:
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info[feature]
    info.short_description = short
    info.reason.add(description=detail)
    return anomalies


def test_describe_names_split_feature_and_problem():
    lines = anomalies_gate.describe_anomalies("eval", _anomaly("price", "Out-of-range values", "price < 0"))
    assert lines == ["eval/price: Out-of-range values (price < 0)"]


def test_gate_raises_with_every_problem(tmp_path):
    artifact = _write_anomalies(
        tmp_path,
        {
            "train": anomalies_pb2.Anomalies(),
            "eval": _anomaly(
                "label", "Column dropped", "The feature was present in fewer examples than expected."
            ),
        },
    )
    with pytest.raises(ValueError, match=r"eval/label: Column dropped \(The feature was present"):
        anomalies_gate.AnomaliesGate.test_call(anomalies=artifact)


def test_gate_passes_clean_data(tmp_path):
    artifact = _write_anomalies(
        tmp_path, {"train": anomalies_pb2.Anomalies(), "eval": anomalies_pb2.Anomalies()}
    )
    assert anomalies_gate.AnomaliesGate.test_call(anomalies=artifact) is None
