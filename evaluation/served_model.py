"""Scoring users through a pushed SavedModel's `recommend` signature, as a client would.

Each user sends their fit items, most recent last, truncated to `features.HISTORY_LENGTH` (right-padded with
"" in a batch); the model excludes what it is sent. The protocol excludes *every* fit item, so for a user
whose older fit items did not fit in the history the harness asks for k + (that many) items and drops them;
users are batched by that count, so most batches ask for exactly k. (With a re-ranking knob on, a list asked
for a longer k may differ from the list of length k; this affects only users with more than
HISTORY_LENGTH fit items.)

Re-ranking knobs are the signature's scalar inputs other than user_id, history and k (e.g. `mmr_lambda`,
`xquad_lambda`); a knob left out of a setting is sent as 0 (the base ranking).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401  (registers the tokenizer ops the transform graph uses)

from evaluation.split import Split  # noqa: E402
from trainer import features  # noqa: E402

BASE_INPUTS = ("user_id", "history", "k")
PAD = -1


class ServedModel:
    """A loaded SavedModel: its `recommend` knobs, batched top-k lists and its cached item text vectors."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._loaded = tf.saved_model.load(model_dir)
        self._recommend = self._loaded.signatures["recommend"]
        self._specs = self._recommend.structured_input_signature[1]

    @property
    def knobs(self) -> tuple[str, ...]:
        """Names of the signature's extra scalar inputs, sorted."""
        return tuple(
            sorted(
                name for name, spec in self._specs.items() if name not in BASE_INPUTS and spec.shape.rank == 0
            )
        )

    def rank(
        self, split: Split, k: int, settings: dict[str, float] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """[U, k] item indices (-1 padded) for every user of `split`, fit items excluded."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(self.knobs))
        if unknown:
            raise ValueError(
                f"the model's recommend signature has no input(s) {unknown}; knobs: {self.knobs}"
            )
        index = {item_id: i for i, item_id in enumerate(split.item_ids)}
        overflow = np.array(
            [len(set(h.tolist()) - set(h[-features.HISTORY_LENGTH :].tolist())) for h in split.history]
        )
        order = np.argsort(overflow, kind="stable")
        recs = np.full((len(split.users), k), PAD, np.int64)
        for lo in range(0, len(order), batch_size):
            users = order[lo : lo + batch_size]
            asked = min(k + int(overflow[users].max()), split.num_items)
            ids = self._call(split, users, asked, settings)
            for row, u in enumerate(users):
                recs[u] = _keep_unseen(ids[row], split.history[u], index, k)
        return recs

    def _call(self, split: Split, users: np.ndarray, k: int, settings: dict[str, float]) -> np.ndarray:
        histories = [[split.item_ids[i] for i in split.history[u][-features.HISTORY_LENGTH :]] for u in users]
        width = max([1, *(len(h) for h in histories)])
        padded = [h + [""] * (width - len(h)) for h in histories]
        inputs = {
            "user_id": tf.constant([split.users[u] for u in users]),
            "history": tf.constant(padded, tf.string),
            "k": tf.constant(k, tf.int32),
        }
        for knob in self.knobs:
            inputs[knob] = tf.constant(settings.get(knob, 0.0), self._specs[knob].dtype)
        return self._recommend(**inputs)["item_ids"].numpy()

    def text_vectors(self, item_ids: tuple[str, ...]) -> np.ndarray | None:
        """[N, T] the model's cached BERT text vector of each item, or None if the model has no such cache
        or it misses an item."""
        try:
            cache = self._loaded.model.text_cache
            keys, rows = tf.raw_ops.LookupTableExportV2(
                table_handle=cache.table.resource_handle, Tkeys=tf.string, Tvalues=tf.int64
            )
            vectors = cache.vectors.numpy()
        except (AttributeError, tf.errors.OpError):
            return None
        row_of = dict(zip((key.decode() for key in keys.numpy()), rows.numpy().tolist(), strict=True))
        if any(item not in row_of for item in item_ids):
            return None
        return vectors[[row_of[item] for item in item_ids]]


def _keep_unseen(ids: np.ndarray, history: np.ndarray, index: dict[str, int], k: int) -> np.ndarray:
    """The first k returned items that are in the catalog and not in the user's history, -1 padded."""
    seen = set(history.tolist())
    kept = [index[i] for i in (raw.decode() for raw in ids) if i in index and index[i] not in seen][:k]
    return np.array(kept + [PAD] * (k - len(kept)), np.int64)
