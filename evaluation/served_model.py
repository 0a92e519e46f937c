"""Scoring users through a pushed SavedModel's `recommend` signature, with the in-process client
(serving/local_client.py) and so the same request as any client sends.

Each user sends their fit items, most recent last, truncated to `features.HISTORY_LENGTH` (right-padded with
"" in a batch); the model excludes what it is sent. The protocol excludes *every* fit item, so for a user
whose older fit items did not fit in the history the harness asks for k + (that many) items and drops them;
users are batched by that count, so most batches ask for exactly k. (With a re-ranking knob on, a list asked
for a longer k may differ from the list of length k; this affects only users with more than
HISTORY_LENGTH fit items.)

Re-ranking knobs are the signature's scalar inputs other than user_id, history and k (e.g. `mmr_lambda`,
`xquad_lambda`); a knob left out of a setting is sent off (`serving.recommend_request.with_knobs_off`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from evaluation.metrics import PAD
from evaluation.split import Split
from serving.local_client import LocalClient
from serving.recommend_request import knob_names, with_knobs_off
from trainer import features


class ServedModel:
    """A loaded SavedModel: its `recommend` knobs, batched top-k lists and its cached item text vectors."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._client = LocalClient(model_dir)
        self.knobs = knob_names(self._client.scalar_inputs(features.RECOMMEND_SIGNATURE))  # sorted names

    def rank(
        self, split: Split, k: int, settings: dict[str, float] | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """[U, k] item indices (-1 padded) for every user of `split`, fit items excluded."""
        knobs = with_knobs_off(settings or {}, self.knobs)  # checked before the first batch
        index = {item_id: i for i, item_id in enumerate(split.item_ids)}
        overflow = np.array(
            [len(set(h.tolist()) - set(h[-features.HISTORY_LENGTH :].tolist())) for h in split.history]
        )
        order = np.argsort(overflow, kind="stable")
        recs = np.full((len(split.users), k), PAD, np.int64)
        for lo in range(0, len(order), batch_size):
            users = order[lo : lo + batch_size]
            asked = min(k + int(overflow[users].max()), split.num_items)
            histories = [
                [split.item_ids[i] for i in split.history[u][-features.HISTORY_LENGTH :]] for u in users
            ]
            result = self._client.recommend([split.users[u] for u in users], histories, asked, **knobs)
            for u, ids in zip(users, result.item_ids(), strict=True):
                recs[u] = _keep_unseen(ids, split.history[u], index, k)
        return recs

    def text_vectors(self, item_ids: tuple[str, ...]) -> np.ndarray | None:
        """[N, T] the model's cached BERT text vector of each item, or None if the model has no such cache
        or it misses an item."""
        try:
            cache = self._client.loaded.model.text_cache
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


def _keep_unseen(ids: list[str], history: np.ndarray, index: dict[str, int], k: int) -> np.ndarray:
    """The first k returned items that are in the catalog and not in the user's history, -1 padded."""
    seen = set(history.tolist())
    kept = [index[i] for i in ids if i in index and index[i] not in seen][:k]
    return np.array(kept + [PAD] * (k - len(kept)), np.int64)
