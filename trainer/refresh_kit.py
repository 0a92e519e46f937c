"""What a trained model keeps so that its catalog can be refreshed without retraining (trainer/refresh.py).

`recommend` and `item_embeddings` give every unknown item one shared vector; a new item needs the trained
towers run on its text, brand, categories and price (the cold-item path). The Trainer writes this kit into
<model dir>/assets.extra/refresh/, so it travels with every pushed version (TF Serving ignores assets.extra):

  trainer_config.json     the TrainerConfig the towers were built with
  bert.json               the digest of the BERT weights the catalog text was encoded with
  towers.*                a checkpoint of the trained layers (not the frozen BERT, which `config.bert`
                          reloads, nor the catalog's text vectors, which the encoding cache holds)
  transform_output.tar    the Transform graph: tokenizer, vocabularies, normalization (an archive: TFX's
                          Pusher copies a model folder without any saved_model.pb below its top level)
  chosen_blend.json       the served score's chosen mix (trainer/blend.py), rebuilt over the new catalog
  positives.npz           the training positives (user index, item id) the item-item tables are built from
  eval_positives.npz      up to MAX_EVAL_POSITIVES positives of the eval split (history, item id): a refresh
                          validates the new version on them against the current one
  seen_items.npz          the items seen without a positive (rated below the threshold): the refreshed
                          blend keeps them out of the text fill, as training did (absent in older kits)
"""

from __future__ import annotations

import atexit
import dataclasses
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from trainer import blend, features
from trainer.config import TrainerConfig
from trainer.model import TailTowerModel

logger = logging.getLogger(__name__)

CONFIG_FILE = "trainer_config.json"
BERT_DIGEST_FILE, BERT_DIGEST = "bert.json", "weights_digest"
TOWERS_PREFIX = "towers"
TRANSFORM_ARCHIVE = "transform_output.tar"
BLEND_FILE = "chosen_blend.json"
POSITIVES_FILE = "positives.npz"
EVAL_POSITIVES_FILE = "eval_positives.npz"
SEEN_FILE = "seen_items.npz"
# Enough for a recall difference of ~0.01 to stand out of the noise, few enough to score in seconds.
MAX_EVAL_POSITIVES = 5_000
# The training positives' keys the item-item tables read, and the eval positives' keys a validation sends.
POSITIVE_KEYS = (features.USER_INDEX, features.ITEM_ID)
EVAL_KEYS = (features.HISTORY, features.ITEM_ID)


def kit_dir(model_dir: str) -> str:
    return os.path.join(model_dir, features.ASSETS_EXTRA_DIR, features.REFRESH_KIT_DIR)


def trained_layers(model: TailTowerModel) -> dict[str, tf.Module]:
    """The layers whose weights training set, by name; the text cache (catalog-sized) stays out."""
    query, candidate = model.query_tower, model.candidate_tower
    layers = {
        "item_vectors": model.item_vectors,
        "user_embedding": query.user_embedding,
        "history_pooling": query.pooling,
        "query_output": query.output_layer,
        "brand_embedding": candidate.brand_embedding,
        "category_embedding": candidate.category_embedding,
        "candidate_output": candidate.output_layer,
        "ranking_head": model.ranking_head,
        "position_bias": model.position_bias,
        "text_encoder": model.text_encoder,  # fine-tuned BERT only (None when frozen)
    }
    return {name: layer for name, layer in layers.items() if layer is not None}


@dataclasses.dataclass(frozen=True)
class Kit:
    config: TrainerConfig
    transform_output: tft.TFTransformOutput
    chosen: blend.Blend
    positives: dict[str, np.ndarray]  # POSITIVE_KEYS
    eval_positives: dict[str, np.ndarray]  # EVAL_KEYS
    towers: str  # the checkpoint's path prefix
    bert_digest: str  # "" when the kit predates it (not checked)
    seen_ids: frozenset[bytes] = frozenset()  # items seen without a positive (SEEN_FILE)


def write_kit(
    model: TailTowerModel,
    config: TrainerConfig,
    transform_output_dir: str,
    chosen: blend.Blend,
    positives: Mapping[str, np.ndarray],
    eval_positives: Mapping[str, np.ndarray],
    bert_digest: str,
    model_dir: str,
    seen_ids: Sequence[bytes] = (),
) -> str:
    """Writes the kit of `model` into `model_dir` (after the SavedModel is saved); returns its folder.

    bert_digest: `encoding_cache.weights_digest` of the BERT the catalog text was encoded with; a refresh
    refuses another BERT at `config.bert` (its vectors would not be what the towers were trained on).
    seen_ids: the catalog items seen without a positive (`train.seen_items` minus those with positives).
    """
    folder = kit_dir(model_dir)
    tf.io.gfile.makedirs(folder)
    _write_json(os.path.join(folder, CONFIG_FILE), dataclasses.asdict(config))
    _write_json(os.path.join(folder, BERT_DIGEST_FILE), {BERT_DIGEST: bert_digest})
    _write_json(os.path.join(folder, BLEND_FILE), dataclasses.asdict(chosen))
    tf.train.Checkpoint(**trained_layers(model)).write(os.path.join(folder, TOWERS_PREFIX))
    _archive(transform_output_dir, os.path.join(folder, TRANSFORM_ARCHIVE))
    _write_npz(os.path.join(folder, POSITIVES_FILE), {key: positives[key] for key in POSITIVE_KEYS})
    _write_npz(os.path.join(folder, EVAL_POSITIVES_FILE), _sample(eval_positives, config.seed))
    _write_npz(os.path.join(folder, SEEN_FILE), {features.ITEM_ID: np.asarray(list(seen_ids), object)})
    logger.info("Wrote the refresh kit to %s", folder)
    return folder


def copy_kit(source_model_dir: str, model_dir: str) -> None:
    """A refreshed version keeps its parent's kit (same towers, positives and eval positives)."""
    _copy_tree(kit_dir(source_model_dir), kit_dir(model_dir))


def has_kit(model_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(kit_dir(model_dir), CONFIG_FILE))


def read_kit(model_dir: str) -> Kit:
    """The kit of a model folder; FileNotFoundError names what is missing (a model from before kits)."""
    folder = kit_dir(model_dir)
    if not has_kit(model_dir):
        raise FileNotFoundError(
            f"{model_dir} has no refresh kit ({folder}): it was exported before catalog refresh existed; "
            "run the pipeline once to train a model that has one"
        )
    return Kit(
        config=TrainerConfig.from_custom_config(_read_json(os.path.join(folder, CONFIG_FILE))),
        transform_output=tft.TFTransformOutput(_unpack(os.path.join(folder, TRANSFORM_ARCHIVE))),
        chosen=blend.Blend(**_read_json(os.path.join(folder, BLEND_FILE))),
        positives=_read_npz(os.path.join(folder, POSITIVES_FILE)),
        eval_positives=_read_npz(os.path.join(folder, EVAL_POSITIVES_FILE)),
        towers=os.path.join(folder, TOWERS_PREFIX),
        bert_digest=_bert_digest(folder),
        seen_ids=_seen_ids(folder),
    )


def _seen_ids(folder: str) -> frozenset[bytes]:
    path = os.path.join(folder, SEEN_FILE)
    if not tf.io.gfile.exists(path):  # a kit from before SEEN_FILE: every item without positives is filled
        return frozenset()
    return frozenset(_read_npz(path)[features.ITEM_ID].tolist())


def _bert_digest(folder: str) -> str:
    """The kit's BERT digest; "" (not checked, logged) for a kit written before digests were kept."""
    path = os.path.join(folder, BERT_DIGEST_FILE)
    if not tf.io.gfile.exists(path):
        logger.warning(
            "%s has no %s: the BERT weights cannot be checked against the trained model's",
            folder,
            BERT_DIGEST_FILE,
        )
        return ""
    return _read_json(path)[BERT_DIGEST]


def restore_towers(model: TailTowerModel, towers: str) -> None:
    """Loads the kit's trained weights into `model`, which must be built (every layer called once)."""
    status = tf.train.Checkpoint(**trained_layers(model)).read(towers)
    status.assert_existing_objects_matched()


def _sample(positives: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    n = len(positives[features.ITEM_ID])
    keep = np.arange(n)
    if n > MAX_EVAL_POSITIVES:
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_EVAL_POSITIVES, replace=False))
    return {key: np.asarray(positives[key])[keep] for key in EVAL_KEYS}


def _write_json(path: str, value: Any) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, sort_keys=True) + "\n")


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **{key: _plain(value) for key, value in arrays.items()})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _plain(value: np.ndarray) -> np.ndarray:
    """Object arrays of bytes (TensorFlow's strings) as fixed-width bytes, which load without pickle."""
    value = np.asarray(value)
    return value.astype(np.bytes_) if value.dtype == object else value


def _read_npz(path: str) -> dict[str, np.ndarray]:
    with tf.io.gfile.GFile(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
    return {key: data[key] for key in data.files}


def _archive(source: str, path: str) -> None:
    """The folder `source` as one tar file at `path` (gfile: either may be gs://)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder, _, files in tf.io.gfile.walk(source):
            for name in files:
                with tf.io.gfile.GFile(os.path.join(folder, name), "rb") as f:
                    data = f.read()
                info = tarfile.TarInfo(os.path.relpath(os.path.join(folder, name), source))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _unpack(path: str) -> str:
    """Extracts `_archive`'s tar into a local temporary folder (removed at exit); returns the folder."""
    folder = tempfile.mkdtemp(prefix="tailtower-transform-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with tf.io.gfile.GFile(path, "rb") as f, tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _copy_tree(source: str, dest: str) -> None:
    for folder, _, files in tf.io.gfile.walk(source):
        target = os.path.join(dest, os.path.relpath(folder, source))
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)
