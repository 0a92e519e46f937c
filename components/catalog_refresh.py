"""CatalogRefresh: the live model's towers over an updated catalog, validated, as a Model for the Pusher.

Reads the latest version under the push destination (what is serving), re-encodes the catalog of `data_dir`
with its refresh kit (trainer/refresh.py) and writes the new SavedModel to `model`; `blessing` says whether
the Pusher may push it (blessed 1 only when the new version loads, answers and keeps Recall@k on the eval
positives both versions know within `max_recall_drop`). A refresh that fails pushes nothing; the reason is in
the log and in the blessing's `failure` property.

    refresh = CatalogRefresh(data_dir=..., serving_model_dir=..., encoding_cache=...)
    Pusher(model=refresh.outputs["model"], model_blessing=refresh.outputs["blessing"], ...)
"""
# No `from __future__ import annotations`: TFX reads this component's annotations as types.

import json
import os
import time

import tensorflow as tf
from absl import logging
from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.types import Artifact
from tfx.utils import path_utils

from trainer import refresh

# The ModelBlessing property the Pusher checks, and the Evaluator's marker files.
BLESSED = evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY
BLESSED_FILE, NOT_BLESSED_FILE = (
    evaluator_constants.BLESSED_FILE_NAME,
    evaluator_constants.NOT_BLESSED_FILE_NAME,
)
FAILURE = "failure"  # why it may not be pushed ("" when it may)
REPORT = "report"  # the refresh's RefreshReport as JSON


def latest_version_dir(serving_model_dir: str) -> str:
    """The highest integer version folder under the push destination; FileNotFoundError when none."""
    found = versions(serving_model_dir)
    if not found:
        raise FileNotFoundError(
            f"no pushed model under {serving_model_dir}: run the pipeline (make demo) before refreshing"
        )
    return os.path.join(serving_model_dir, str(max(found)))


def versions(serving_model_dir: str) -> list[int]:
    if not tf.io.gfile.isdir(serving_model_dir):
        return []
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(serving_model_dir))
    return [int(name) for name in names if name.isdigit()]


def _version_ahead_of_clock(serving_model_dir: str) -> str:
    """The Pusher names a version by the clock (seconds): one at or past now would not be superseded."""
    newest = max(versions(serving_model_dir), default=0)
    if newest >= int(time.time()):
        now = int(time.time())
        return f"version {newest} is not older than the clock ({now}): a push would not supersede it"
    return ""


def _bless(blessing: Artifact, report: refresh.RefreshReport) -> None:
    blessing.set_int_custom_property(BLESSED, int(report.passed))
    blessing.set_string_custom_property(FAILURE, report.failure)
    blessing.set_string_custom_property(REPORT, json.dumps(report.__dict__, sort_keys=True))
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(
        os.path.join(blessing.uri, BLESSED_FILE if report.passed else NOT_BLESSED_FILE), "w"
    ):
        pass


@tfx.dsl.components.component
def CatalogRefresh(  # noqa: N802 -- TFX names components by their function
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    data_dir: tfx.dsl.components.Parameter[str],
    serving_model_dir: tfx.dsl.components.Parameter[str],
    max_recall_drop: tfx.dsl.components.Parameter[float],
    encoding_cache: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the refreshed model to `model` and whether to push it to `blessing`."""
    current = latest_version_dir(serving_model_dir)
    report = refresh.refresh(
        current, data_dir, path_utils.serving_model_dir(model.uri), encoding_cache, max_recall_drop
    )
    ahead = _version_ahead_of_clock(serving_model_dir)
    if ahead and report.passed:
        report.passed, report.failure = False, ahead
    _bless(blessing, report)
    logging.info("CatalogRefresh of %s: %s", current, report.summary())
