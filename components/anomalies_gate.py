"""Stops the pipeline when ExampleValidator found anomalies, with a message naming feature and problem.

ExampleValidator only records anomalies; TFX runs Transform anyway. This tiny component fails instead, so a
bad dataset never reaches training.
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import Artifact, artifact_utils
from tfx.utils import io_utils

ANOMALIES_FILENAME = "SchemaDiff.pb"  # what ExampleValidator writes per split


def describe_anomalies(split: str, anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One readable line per anomalous feature: `split/feature: short description (details)`."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        details = "; ".join(reason.description for reason in info.reason if reason.description)
        lines.append(f"{split}/{feature}: {info.short_description}" + (f" ({details})" if details else ""))
    lines.extend(
        f"{split}/<dataset>: {reason.description}" for reason in anomalies.dataset_anomaly_info.reason
    )
    return lines


def load_split_anomalies(artifact: Artifact) -> dict[str, anomalies_pb2.Anomalies]:
    result = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), ANOMALIES_FILENAME)
        result[split] = _read(path)
    return result


def _read(path: str) -> anomalies_pb2.Anomalies:
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(path))
    return anomalies


@tfx.dsl.components.component
def AnomaliesGate(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]):
    """Raises ValueError listing every anomaly of every split; does nothing when there are none."""
    problems = [
        line
        for split, found in load_split_anomalies(anomalies).items()
        for line in describe_anomalies(split, found)
    ]
    if problems:
        raise ValueError(
            "ExampleValidator found anomalies in the input data; fix the data or the schema:\n  "
            + "\n  ".join(problems)
        )
