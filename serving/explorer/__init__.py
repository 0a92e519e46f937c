"""The web explorer: a static page (index.html, explorer.js, explorer.css in this folder) that the
recommendation service serves at `/`, and the dataset users it offers to pick from.

The page only calls the service's public JSON API (serving/service_api.py): recommendations with knobs and
rules on or off, live exposure, a user's stored history and `GET /v1/users`, the users listed here.

Dataset users come from the run's evaluation split: the newest InteractionsExampleGen output under
`<output>/pipeline-root` (TFX's layout `<component id>/<output channel>/<execution id>/Split-eval`), each user
with the history of their first positive eval example, i.e. the history the model was evaluated on. Log
examples only ever go to the train split, so every id here is a dataset id, never a pseudonym.
"""

from __future__ import annotations

import functools
import glob
import os

from pipeline.configs import PIPELINE_ROOT_DIRNAME
from trainer import features

STATIC_DIR = os.path.dirname(os.path.abspath(__file__))  # read at each request: tests swap it
INDEX_FILE = "index.html"
# The files the service serves from STATIC_DIR, with their content types (nothing else is served).
ASSETS = {
    INDEX_FILE: "text/html",
    "explorer.js": "text/javascript",
    "explorer.css": "text/css",
}
# TFX's folder layout under the pipeline root, <component id>/<output channel>/<execution id>/Split-<split>:
# ExampleGen's channel is `examples` (Transform's `transformed_examples` does not match).
_EVAL_SPLITS = "*/examples/*/Split-eval"


def asset(name: str) -> tuple[bytes, str] | None:
    """(the file's bytes, its content type) of one of ASSETS; None for any other name."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return f.read(), content_type


def newest_eval_split(output_dir: str) -> str | None:
    """The newest ExampleGen eval split folder of the run in `output_dir` (largest execution id)."""
    folders = glob.glob(os.path.join(output_dir, PIPELINE_ROOT_DIRNAME, _EVAL_SPLITS))
    numbered = [f for f in folders if os.path.basename(os.path.dirname(f)).isdigit()]
    return max(numbered, key=lambda f: int(os.path.basename(os.path.dirname(f))), default=None)


def dataset_users(output_dir: str, limit: int) -> tuple[str | None, list[tuple[str, list[str]]]]:
    """(the eval split folder read, relative to `output_dir`; up to `limit` (user id, history) pairs in file
    order); (None, []) when the run has no eval split yet."""
    folder = newest_eval_split(output_dir)
    if folder is None:
        return None, []
    return os.path.relpath(folder, output_dir), _read_users(folder, limit)


@functools.lru_cache(maxsize=8)  # a split folder never changes: a new run writes a new one
def _read_users(folder: str, limit: int) -> list[tuple[str, list[str]]]:
    import tensorflow as tf  # the service's model client has loaded it already

    files = sorted(glob.glob(os.path.join(folder, "*")))
    users: dict[str, list[str]] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        if feature[features.LABEL].float_list.value[0] < 0.5:  # negatives carry the same history
            continue
        user = feature[features.USER_ID].bytes_list.value[0].decode()
        history = [v.decode() for v in feature[features.HISTORY].bytes_list.value if v]
        users.setdefault(user, history)
        if len(users) == limit:
            break
    return list(users.items())
