"""What both clients share: the `recommend` inputs from Python values, and the answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trainer import features

PAD = ""  # history padding, as the recommend signature expects


def pad_histories(histories: Sequence[Sequence[str]]) -> list[list[str]]:
    """Right-pads with "" to a rectangle ([B, H], H >= 1: a [B, 0] tensor has no JSON form)."""
    width = max([1, *(len(h) for h in histories)])
    return [list(h) + [PAD] * (width - len(h)) for h in histories]


def recommend_inputs(
    users: Sequence[str], histories: Sequence[Sequence[str]], k: int, knobs: Mapping[str, float | int | str]
) -> dict:
    """The named inputs of `recommend`: user_id [B], history [B, H], k and every knob as scalars."""
    if len(users) != len(histories):
        raise ValueError(f"{len(users)} users but {len(histories)} histories")
    return {
        features.USER_ID: list(users),
        features.HISTORY: pad_histories(histories),
        features.K: int(k),
        **knobs,
    }


@dataclass
class Recommendations:
    """The signature's outputs ([B, k] arrays: item_ids, scores, is_tail, ...) and the version that answered
    (gRPC reports it; REST does not)."""

    outputs: dict[str, np.ndarray]
    version: int | None

    def rows(self, user_index: int) -> list[dict]:
        """One dict per recommended item of one user, "" padding dropped."""
        ids = self.outputs[features.ITEM_IDS][user_index]
        columns = {
            name: value[user_index]
            for name, value in self.outputs.items()
            if np.ndim(value) == 2 and len(value[user_index]) == len(ids)
        }
        rows = []
        for position, item in enumerate(ids):
            item = item.decode() if isinstance(item, bytes) else str(item)
            if item == PAD:
                continue
            rows.append(
                {name: _plain(column[position]) for name, column in columns.items()}
                | {features.ITEM_IDS: item}
            )
        return rows


def _plain(value):
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode() if isinstance(value, bytes) else value
