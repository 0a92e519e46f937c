"""Scoring users through a pushed SavedModel's `recommend` signature, with the in-process client
(serving/local_client.py) and so the same request as any client sends.

Each user sends their fit items, most recent last, truncated to `features.HISTORY_LENGTH` (right-padded with
"" in a batch); the model excludes what it is sent. The protocol excludes *every* fit item, so for a user
whose older fit items did not fit in the history the harness asks for k + (that many) items and drops them;
users are batched by that count, so most batches ask for exactly k. (With a re-ranking knob on, a list asked
for a longer k may differ from the list of length k; this affects only users with more than
HISTORY_LENGTH fit items.)

Under the history-kept protocol (evaluation/split.py) the request carries keep_history=1 instead: the model
ranks the whole catalog, history included, and every returned catalog item is kept.

Knobs are the signature's scalar inputs other than k and keep_history (e.g. the re-ranking `mmr_lambda`,
`xquad_lambda` and the `new_item_boost`); a knob left out of a setting is sent off
(`serving.recommend_request.with_knobs_off`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from evaluation.metrics import PAD
from evaluation.split import Split
from serving import catalog_metadata
from serving.local_client import LocalClient
from serving.recommend_request import knob_names, with_knobs_off
from trainer import features


def read_blend(model_dir: str) -> dict | None:
    """The served score's mix the Trainer chose (assets.extra/blend.json), None for older models."""
    path = os.path.join(model_dir, features.ASSETS_EXTRA_DIR, features.BLEND_SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class ServedModel:
    """A loaded SavedModel: its `recommend` knobs, batched top-k lists and its cached item text vectors."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._client = LocalClient(model_dir)
        scalars = knob_names(self._client.scalar_inputs(features.RECOMMEND_SIGNATURE))
        self._has_keep_history = features.KEEP_HISTORY in scalars
        self.knobs = tuple(name for name in scalars if name != features.KEEP_HISTORY)  # sorted names

    def blend(self) -> dict | None:
        return read_blend(self.model_dir)

    def new_items(self) -> int:
        """How many catalog items the model flags new (what `new_item_boost` lifts), from the catalog
        metadata of its version folder (0 for a model exported without it)."""
        return sum(info.is_new for info in catalog_metadata.read_items(self.model_dir).values())

    def rank(
        self,
        split: Split,
        k: int,
        settings: dict[str, float] | None = None,
        keep_history: bool = False,
        batch_size: int = 256,
    ) -> np.ndarray:
        """[U, k] item indices (-1 padded) for every user of `split`, fit items excluded unless
        `keep_history` (the history-kept protocol)."""
        knobs = with_knobs_off(settings or {}, self.knobs) | self._history_input(keep_history)  # checked now
        index = {item_id: i for i, item_id in enumerate(split.item_ids)}
        # Fit items beyond the sent history, asked for on top of k and dropped (none when history is kept).
        overflow = np.array(
            [
                0 if keep_history else len(set(h.tolist()) - set(h[-features.HISTORY_LENGTH :].tolist()))
                for h in split.history
            ],
            np.int64,
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
                recs[u] = _first_k(ids, () if keep_history else split.history[u].tolist(), index, k)
        return recs

    def _history_input(self, keep_history: bool) -> dict[str, int]:
        """The keep_history input (0 or 1); {} for a model without it, which always excludes.

        Raises:
          ValueError: `keep_history` asked of a model exported before the input existed.
        """
        if self._has_keep_history:
            return {features.KEEP_HISTORY: int(keep_history)}
        if keep_history:
            raise ValueError(
                f"{self.model_dir}: its `recommend` has no {features.KEEP_HISTORY} input, so it cannot be "
                "scored with the history kept; export it again"
            )
        return {}

    def text_vectors(self, item_ids: tuple[str, ...]) -> np.ndarray | None:
        """[N, T] the model's cached BERT text vector of each item, or None if the model has no such cache
        or it misses an item."""
        cached = cached_text_vectors(self._client.loaded)
        if cached is None:
            return None
        row_of = {item: row for row, item in enumerate(cached[0])}
        if any(item not in row_of for item in item_ids):
            return None
        return cached[1][[row_of[item] for item in item_ids]]


def cached_text_vectors(loaded) -> tuple[list[str], np.ndarray] | None:
    """(item ids, [N, T] vectors) of a loaded tailtower SavedModel's text cache; None when it has none."""
    try:
        cache = loaded.model.text_cache
        keys, rows = tf.raw_ops.LookupTableExportV2(
            table_handle=cache.table.resource_handle, Tkeys=tf.string, Tvalues=tf.int64
        )
        vectors = cache.vectors.numpy()
    except (AttributeError, tf.errors.OpError):
        return None
    return [key.decode() for key in keys.numpy()], vectors[rows.numpy()]


def _first_k(ids: list[str], dropped: Iterable[int], index: dict[str, int], k: int) -> np.ndarray:
    """The first k returned items that are in the catalog and not `dropped` (item indices), -1 padded."""
    seen = set(dropped)
    kept = [index[i] for i in ids if i in index and index[i] not in seen][:k]
    return np.array(kept + [PAD] * (k - len(kept)), np.int64)
