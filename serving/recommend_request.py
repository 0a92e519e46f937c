"""The one request builder and response reader of the `recommend` signature, for every transport.

The in-process client (serving/local_client.py), REST (rest_client.py) and gRPC (grpc_client.py) all build
their request here and read the answer as `Recommendations`, so a new input of `recommend` (a filter, a knob)
is added here and nowhere else. No TensorFlow import: the REST client stays light.

  inputs = recommend_inputs(["u1", "u2"], [["i3", "i7"], []], k=10, knobs={"mmr_lambda": 0.2})
  inputs["history"]  # [["i3", "i7"], ["", ""]]
  typed_inputs(inputs, {"user_id": np.dtype(object), "k": np.dtype(np.int32), ...})  # numpy arrays

History is right-padded with "" to a rectangle and never truncated: the model keeps the most recent
`features.HISTORY_LENGTH` items for the query and excludes every item it is sent.

Item filters (`features.FILTER_MAX_WIDTH`: exclude_ids, allowed_ids, categories, brands) are required inputs
of `recommend` (TF Serving has no optional inputs), so every request carries all of them: a filter not given
is a [B, 1] column of "" (no restriction; [B, 0] has no JSON form), given ones are padded like history.
Through a client they ride with the knobs: `client.recommend(users, histories, k, exclude_ids=[["i3"], []],
**knobs)`. For a model exported before the filters, pass `declared=filter_names(<its recommend inputs>)`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trainer import features

PAD = ""  # history and filter padding, as the recommend signature expects
KNOB_OFF = 0  # a re-ranking knob at 0 gives the base ranking (trainer/features.py)

Knob = float | int | str


def pad_rows(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Right-pads with "" to a rectangle ([B, H], H >= 1: a [B, 0] tensor has no JSON form)."""
    width = max([1, *(len(row) for row in rows)])
    return [list(row) + [PAD] * (width - len(row)) for row in rows]


pad_histories = pad_rows  # the history's padding is every string row's


def recommend_inputs(
    users: Sequence[str],
    histories: Sequence[Sequence[str]],
    k: int,
    knobs: Mapping[str, Knob | Sequence[Sequence[str]]],
    filters: Mapping[str, Sequence[Sequence[str]]] | None = None,
    declared: Collection[str] = tuple(features.FILTER_MAX_WIDTH),
) -> dict:
    """The named inputs of `recommend` as JSON-ready values: user_id [B], history [B, H], k and every knob
    as scalars, and every filter of `declared` as [B, X] ("" padding; [B, 1] of "" when not given).

    Args:
      filters: {filter name: one list of strings per user}; filters may also come among `knobs` (how the
        clients pass them on).
      declared: the filters the model's `recommend` has (`filter_names` of its inputs; default: all of
        `features.FILTER_MAX_WIDTH`; a model exported before the filters has none).

    Raises:
      ValueError: a filter outside `declared`; not one history, or one list per filter, per user; a filter
        row that is a string.
    """
    filters = {name: knobs[name] for name in features.FILTER_MAX_WIDTH if name in knobs} | dict(filters or {})
    unknown = sorted(set(filters) - set(declared))
    if unknown:
        raise ValueError(f"recommend has no filter(s) {unknown}; its filters: {list(declared)}")
    if len(users) != len(histories):
        raise ValueError(f"{len(users)} users but {len(histories)} histories: one history per user")
    return {
        features.USER_ID: list(users),
        features.HISTORY: pad_rows(histories),
        features.K: int(k),
        **{name: value for name, value in knobs.items() if name not in filters},
        **{
            name: pad_rows(_per_user(name, filters.get(name, [[]] * len(users)), len(users)))
            for name in declared
        },
    }


def filter_names(input_names: Iterable[str]) -> tuple[str, ...]:
    """The item filters of `recommend` among its input names, in `features.FILTER_MAX_WIDTH` order."""
    names = set(input_names)
    return tuple(name for name in features.FILTER_MAX_WIDTH if name in names)


def _per_user(name: str, rows: Sequence[Sequence[str]], users: int) -> Sequence[Sequence[str]]:
    """`rows` once checked to be one list of strings per user."""
    if len(rows) != users:
        raise ValueError(f"{users} users but {len(rows)} rows of {name}: one list per user")
    if any(isinstance(row, str | bytes) for row in rows):
        raise ValueError(f"{name} needs one list of strings per user, not a string per user")
    return rows


def typed_inputs(inputs: Mapping[str, object], dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """`inputs` as numpy arrays of the dtypes the signature declares ({input name: numpy dtype}, read from
    the model: the loaded signature in-process, GetModelMetadata over gRPC). The model does not cast (an
    int64 `k` for an int32 input is an error), hence this. A name without a dtype keeps the dtype numpy
    infers, for the model to reject with its own message.

    Raises:
      ValueError: a value that the declared dtype cannot hold exactly (k=2.5 for an int32 `k`).
    """
    return {name: _typed(name, value, dtypes.get(name)) for name, value in inputs.items()}


def _typed(name: str, value: object, dtype: np.dtype | None) -> np.ndarray:
    if dtype is None:
        return np.asarray(value)
    dtype = np.dtype(dtype)
    if dtype.kind == "O":  # DT_STRING
        return np.asarray(value, dtype=object)
    array = np.asarray(value)
    try:
        typed = array.astype(dtype)
    except ValueError as e:
        raise ValueError(f"input {name!r}: {value!r} is not a {dtype}") from e
    if dtype.kind in "iub" and not np.array_equal(typed, array):
        raise ValueError(f"input {name!r}: {value!r} is not exactly a {dtype}")
    return typed


def knob_names(scalar_inputs: Iterable[str]) -> tuple[str, ...]:
    """The re-ranking knobs of `recommend`: its scalar (rank-0) inputs besides k, sorted."""
    return tuple(sorted(set(scalar_inputs) - {features.K}))


def with_knobs_off(knobs: Mapping[str, Knob], names: Iterable[str]) -> dict[str, Knob]:
    """`knobs` plus KNOB_OFF for every knob of `names` not given: the signature has no defaults.

    Raises:
      ValueError: a knob outside `names`, naming it and listing the known ones.
    """
    names = tuple(names)
    unknown = sorted(set(knobs) - set(names))
    if unknown:
        raise ValueError(f"the recommend signature has no knob(s) {unknown}; its knobs: {list(names)}")
    return {name: knobs.get(name, KNOB_OFF) for name in names}


@dataclass
class Recommendations:
    """The signature's outputs ([B, k] arrays: item_ids, scores, is_tail, ...) and the version that answered
    (gRPC reports it; REST and the in-process client do not)."""

    outputs: dict[str, np.ndarray]
    version: int | None

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, object], version: int | None = None) -> Recommendations:
        return cls({name: np.asarray(value) for name, value in outputs.items()}, version)

    def item_ids(self) -> list[list[str]]:
        """[B][k] the recommended ids as str, "" padding kept (a user with fewer than k eligible items)."""
        return [[_plain(item) for item in row] for row in self.outputs[features.ITEM_IDS]]

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
            item = _plain(item)
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
