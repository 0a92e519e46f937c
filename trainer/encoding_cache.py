"""Frozen-BERT item vectors shared across pipeline runs: each distinct item text is encoded once, ever.

An item's key is the normalized text digest: the hex sha256 of its int64 token ids where its mask is 1.
WordPiece has already lower-cased the text, stripped its accents and cut it to max_tokens, so two texts that
differ only in case, accents or beyond the cut share one key, exactly as they share the encoder's input.
The ids under the mask are hashed, not the padding, so a key says nothing about the padded width T: the
folder does (a row's vector depends on T in its last bits).

Layout: `<root>/<weights_digest[:16]>-t<max_tokens>/<UTC time>-<uuid>.npz`, one shard per `encode` call
that encoded something, holding `keys` (S64 [M]) and `vectors` (float32 [M, H]). A shard is written aside
and renamed, so readers only see complete files, and is never rewritten, so concurrent runs need no lock
(two runs that encode the same new text both store it; readers take either). All I/O is tf.io.gfile's,
so the root may be a local folder or a gs:// path. Nothing is ever evicted.

Vectors: what `encode` returns is the bytes each row was encoded to, and equals an uncached `encode_fn`
over the same rows when encode_fn gives each row a vector independent of the rows encoded with it, as
`bert.encode_in_batches` does with its fixed batch shape on most CPUs; on one (2026-12-04) a row's last
bit still varied with the batch's other rows (7 of 200 rows, at most 1.2e-7). The folder name does not
record the hardware: a CPU and a GPU sharing one root would mix vectors that differ in their last bits.

Example:
    cache = EncodingCache(root, weights_digest(encoder), features.MAX_TOKENS)
    vectors = cache.encode(ids, mask, functools.partial(bert.encode_in_batches, encoder))
"""

import contextlib
import hashlib
import io
import json
import os
import time
import uuid
import zipfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from trainer import bert

# (ids int [N, T], mask int [N, T]) -> float32 [N, H]
EncodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

KEYS, VECTORS = "keys", "vectors"  # the arrays of a shard
KEY_DTYPE = np.dtype("S64")  # hex: raw digests could end in b"\0", which numpy's bytes strip
# Bumped when what a vector means changes without the weights changing (pooling, the encoder's code): old
# entries are then never read.
FORMAT_VERSION = 1
SHARD_SUFFIX = ".npz"
_PARTIAL_SUFFIX = ".partial"
# BERT config fields that change the forward pass without changing any weight's shape.
_FORWARD_CONFIG = ("hidden_act", "layer_norm_eps", "num_attention_heads", "position_embedding_type")
# What reading a damaged, truncated or foreign file can raise (np.load refuses pickles: ValueError).
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, tf.errors.OpError)


def text_keys(input_ids: np.ndarray, input_mask: np.ndarray) -> np.ndarray:
    """S64 [N]: each row's normalized text digest, the hex sha256 of its int64 ids where the mask is 1."""
    ids, mask = np.asarray(input_ids, "<i8"), np.asarray(input_mask).astype(bool)
    digests = [hashlib.sha256(row[used].tobytes()).hexdigest() for row, used in zip(ids, mask, strict=True)]
    return np.array(digests, KEY_DTYPE)


def weights_digest(encoder: bert.BertTextEncoder) -> str:
    """Hex sha256 of the encoder's BERT: its forward-pass config, then every weight's name and bytes.

    Names are taken relative to the BERT model, whose Keras name gets a suffix when a process loads a
    second one (tf_bert_model_1/...): the same weights loaded twice give the same digest.
    """
    if not encoder.weights:
        raise ValueError("the encoder has no weights yet: call it (or load_bert) once before hashing it")
    digest = hashlib.sha256()
    config = {name: getattr(encoder.bert.config, name, None) for name in _FORWARD_CONFIG}
    digest.update(json.dumps(config, sort_keys=True).encode())
    prefix = encoder.bert.name + "/"
    named = sorted(((v.name.split(prefix, 1)[-1], v) for v in encoder.weights), key=lambda pair: pair[0])
    for name, var in named:
        value = np.ascontiguousarray(var.numpy())
        digest.update(f"{name} {value.dtype.str} {value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class EncodingCache:
    """Item vectors of one BERT (`weights_digest`) at one padded width (`max_tokens`) under `root`."""

    def __init__(self, root: str, weights_digest: str, max_tokens: int):
        self.max_tokens = max_tokens
        self.directory = os.path.join(root, f"v{FORMAT_VERSION}-{weights_digest[:16]}-t{max_tokens}")

    def encode(self, input_ids: np.ndarray, input_mask: np.ndarray, encode_fn: EncodeFn) -> np.ndarray:
        """float32 [N, H] vectors of the rows of ids/mask int [N, max_tokens], in input order.

        Calls `encode_fn` at most once, on the distinct rows that no shard holds (none: no call), and stores
        what it returns as a new shard. Empty input: encode_fn's own answer for no rows ([0, H]).
        """
        if np.ndim(input_ids) != 2 or np.shape(input_ids)[1] != self.max_tokens:
            raise ValueError(f"expected ids of shape [N, {self.max_tokens}], got {np.shape(input_ids)}")
        if not len(input_ids):
            return np.asarray(encode_fn(input_ids, input_mask), np.float32)
        start = time.monotonic()
        keys, first, inverse = np.unique(
            text_keys(input_ids, input_mask), return_index=True, return_inverse=True
        )
        stored_keys, vectors = self._load()
        index = {key: row for row, key in enumerate(stored_keys.tolist())}
        rows = np.array([index.get(key, -1) for key in keys.tolist()])
        missing = np.flatnonzero(rows < 0)
        timings = {"load": time.monotonic() - start}
        if len(missing):
            pick = first[missing]
            new = self._encode_new(
                keys[missing], input_ids[pick], input_mask[pick], encode_fn, vectors, timings
            )
            rows[missing] = len(vectors) + np.arange(len(missing))
            vectors = np.concatenate([vectors, new]) if len(vectors) else new
        logging.info(
            "Encoding cache %s: %d items (%d distinct texts): %d from the cache, %d encoded (%s)",
            self.directory,
            len(inverse),
            len(keys),
            np.count_nonzero(~np.isin(inverse, missing)),
            len(missing),
            ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()),
        )
        return vectors[rows[inverse]]

    def _encode_new(
        self,
        keys: np.ndarray,
        input_ids: np.ndarray,
        input_mask: np.ndarray,
        encode_fn: EncodeFn,
        stored: np.ndarray,
        timings: dict[str, float],
    ) -> np.ndarray:
        """float32 [M, H] from encode_fn for the rows of `keys`, stored as a new shard."""
        start = time.monotonic()
        new = np.asarray(encode_fn(input_ids, input_mask), np.float32)
        _check_width(new, len(keys), stored)
        timings["encode"] = time.monotonic() - start
        self._write(keys, new)
        timings["store"] = time.monotonic() - start - timings["encode"]
        return new

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys S64 [S], vectors float32 [S, H]) of every readable shard; unreadable ones are logged."""
        keys, vectors = [], []
        for path in sorted(_glob(os.path.join(self.directory, "*" + SHARD_SUFFIX))):
            shard = _read_shard(path)
            if shard and vectors and shard[1].shape[1] != vectors[0].shape[1]:
                _warn_unreadable(path, f"width {shard[1].shape[1]}, the others' {vectors[0].shape[1]}")
            elif shard:
                keys.append(shard[0])
                vectors.append(shard[1])
        if not keys:
            return np.zeros(0, KEY_DTYPE), np.zeros((0, 0), np.float32)
        return np.concatenate(keys), np.concatenate(vectors)

    def _write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Stores one new shard (aside, then renamed); a failure is logged: the run has its vectors."""
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
        path = os.path.join(self.directory, name)
        buffer = io.BytesIO()
        np.savez(buffer, **{KEYS: keys, VECTORS: vectors})
        try:
            tf.io.gfile.makedirs(self.directory)
            with tf.io.gfile.GFile(path + _PARTIAL_SUFFIX, "wb") as f:
                f.write(buffer.getvalue())
            tf.io.gfile.rename(path + _PARTIAL_SUFFIX, path)
        except (OSError, tf.errors.OpError) as e:
            logging.warning("Could not store %d encoded items in %s: %s", len(keys), path, e)
            with contextlib.suppress(OSError, tf.errors.OpError):
                tf.io.gfile.remove(path + _PARTIAL_SUFFIX)


def _glob(pattern: str) -> list[str]:
    try:
        return tf.io.gfile.glob(pattern)
    except tf.errors.NotFoundError:  # no folder yet (some file systems say so instead of matching nothing)
        return []
    except tf.errors.OpError as e:  # unreadable (permissions): run without the cache rather than fail
        logging.warning("Encoding cache %s unreadable, encoding without it: %s", pattern, e)
        return []


def _read_shard(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(keys, vectors) of a shard, or None (logged) when it cannot be read or is not a shard."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as data:
            keys, vectors = data[KEYS], data[VECTORS]
        if (keys.dtype, vectors.dtype, vectors.ndim, vectors.shape[:1]) != (
            KEY_DTYPE,
            np.float32,
            2,
            keys.shape,
        ):
            raise ValueError(f"keys {keys.dtype} {keys.shape}, vectors {vectors.dtype} {vectors.shape}")
    except _UNREADABLE as e:
        _warn_unreadable(path, f"{type(e).__name__}: {e}")
        return None
    return keys, vectors


def _warn_unreadable(path: str, why: str) -> None:
    logging.warning("Ignoring encoding cache shard %s (its items are encoded again): %s", path, why)


def _check_width(new: np.ndarray, rows: int, stored: np.ndarray) -> None:
    """encode_fn must answer one vector per row, as wide as the stored ones (same BERT, same digest)."""
    if new.ndim != 2 or len(new) != rows or (len(stored) and new.shape[1] != stored.shape[1]):
        raise ValueError(f"encode_fn gave {new.shape} for {rows} rows; the cache holds {stored.shape[1:]}")
