"""evaluation.served_model on a hand-built SavedModel whose `recommend` ranks the catalog in a known order.

The fake ranks items by catalog position (first = best), excluding the history it is sent unless
keep_history is 1; with `mmr_lambda` > 0 it ranks in reverse. It has no BERT text cache. A second fake
without the keep_history input stands for a model exported before it existed.
"""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from evaluation import split
from evaluation.served_model import ServedModel, read_blend
from trainer import features

CATALOG = [f"i{n:02d}" for n in range(30)]


_INPUTS = [
    tf.TensorSpec([None], tf.string, name=features.USER_ID),
    tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
    tf.TensorSpec([], tf.int32, name=features.K),
    tf.TensorSpec([], tf.float32, name=features.MMR_LAMBDA),
]


def _ranked(catalog, user_id, history, k, mmr_lambda, keep_history) -> dict:
    n = tf.shape(catalog)[0]
    base = -tf.cast(tf.range(n), tf.float32)
    scores = tf.where(mmr_lambda > 0, -base, base)[tf.newaxis, :] + tf.zeros([tf.shape(user_id)[0], 1])
    seen = tf.reduce_any(tf.equal(history[:, :, tf.newaxis], catalog[tf.newaxis, tf.newaxis, :]), 1)
    scores = tf.where(tf.logical_and(seen, tf.not_equal(keep_history, 1)), -1e9, scores)
    top, rows = tf.math.top_k(scores, k=k)
    return {"item_ids": tf.gather(catalog, rows), "scores": top, "is_tail": tf.zeros_like(rows)}


class _Fake(tf.Module):
    def __init__(self):
        super().__init__()
        self.catalog = tf.constant(CATALOG)

    @tf.function(input_signature=[*_INPUTS, tf.TensorSpec([], tf.int32, name=features.KEEP_HISTORY)])
    def recommend(self, user_id, history, k, mmr_lambda, keep_history):
        return _ranked(self.catalog, user_id, history, k, mmr_lambda, keep_history)


class _FakeWithoutKeepHistory(tf.Module):
    def __init__(self):
        super().__init__()
        self.catalog = tf.constant(CATALOG)

    @tf.function(input_signature=_INPUTS)
    def recommend(self, user_id, history, k, mmr_lambda):
        return _ranked(self.catalog, user_id, history, k, mmr_lambda, 0)


def _served(folder: str, fake: tf.Module) -> ServedModel:
    tf.saved_model.save(fake, folder, signatures={"recommend": fake.recommend.get_concrete_function()})
    return ServedModel(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _served(str(tmp_path_factory.mktemp("fake-model")), _Fake())


@pytest.fixture(scope="module")
def old_model(tmp_path_factory):
    return _served(str(tmp_path_factory.mktemp("old-model")), _FakeWithoutKeepHistory())


def _split(histories):
    return split.Split(
        split.STANDARD,
        tuple(CATALOG),
        tuple(f"u{i}" for i in range(len(histories))),
        tuple(np.array(h, np.int64) for h in histories),
        np.zeros(len(histories), np.int64),
        np.full(len(histories), -1),
        {},
        np.zeros(len(CATALOG), bool),
    )


def test_knobs_are_the_extra_scalar_inputs_but_keep_history(model, old_model):
    assert model.knobs == old_model.knobs == ("mmr_lambda",)


def test_rank_excludes_the_whole_history_even_beyond_history_length(model):
    long_history = list(range(features.HISTORY_LENGTH + 3))  # items 0..22: only 3..22 fit in the history
    s = _split([[1, 3], [], long_history])
    recs = model.rank(s, k=4, batch_size=2)
    assert recs[0].tolist() == [0, 2, 4, 5]
    assert recs[1].tolist() == [0, 1, 2, 3]
    assert recs[2].tolist() == [23, 24, 25, 26]  # items 0..2 were not sent but are still excluded


def test_rank_passes_knob_settings(model):
    recs = model.rank(_split([[29]]), k=3, settings={"mmr_lambda": 0.5})
    assert recs[0].tolist() == [28, 27, 26]
    with pytest.raises(ValueError, match="xquad_lambda"):
        model.rank(_split([[]]), k=3, settings={"xquad_lambda": 0.5})


def test_rank_with_the_history_kept_returns_history_items(model):
    long_history = list(range(features.HISTORY_LENGTH + 3))
    s = _split([[1, 3], [], long_history])
    recs = model.rank(s, k=4, keep_history=True, batch_size=2)
    assert recs.tolist() == [[0, 1, 2, 3]] * 3  # the catalog's first four, seen or not
    reversed_ = model.rank(_split([[29]]), k=3, settings={"mmr_lambda": 0.5}, keep_history=True)
    assert reversed_.tolist() == [[29, 28, 27]]  # with a knob on too
    with pytest.raises(ValueError, match=r"no knob\(s\) \['keep_history'\]"):  # the protocol, not a knob
        model.rank(s, k=4, settings={features.KEEP_HISTORY: 1})


def test_a_model_without_keep_history_is_ranked_with_the_history_excluded_only(old_model):
    assert old_model.rank(_split([[1, 3]]), k=4).tolist() == [[0, 2, 4, 5]]
    with pytest.raises(ValueError, match="has no keep_history input, so it cannot be scored with the"):
        old_model.rank(_split([[1, 3]]), k=4, keep_history=True)


def test_rank_pads_when_the_catalog_runs_out(model):
    recs = model.rank(_split([list(range(28))]), k=4)
    assert recs[0].tolist() == [28, 29, -1, -1]


def test_a_model_without_a_text_cache_gives_no_vectors(model):
    assert model.text_vectors(tuple(CATALOG)) is None


def test_read_blend_reports_the_trainers_choice_or_none(tmp_path):
    assert read_blend(str(tmp_path)) is None  # a model exported before the blend existed
    folder = tmp_path / features.ASSETS_EXTRA_DIR
    folder.mkdir()
    (folder / features.BLEND_SUMMARY_FILE).write_text('{"alpha": 0.4, "method": "cosine"}\n')
    assert read_blend(str(tmp_path)) == {"alpha": 0.4, "method": "cosine"}


def test_new_items_counts_what_the_catalog_metadata_flags_new(model, tmp_path):
    assert model.new_items() == 0  # exported without catalog metadata
    copy = tmp_path / "model"
    shutil.copytree(model.model_dir, copy)
    (copy / features.ASSETS_EXTRA_DIR).mkdir(exist_ok=True)
    rows = [
        {"item_id": "a", "is_new": True},
        {"item_id": "b", "is_new": False},
        {"item_id": "c", "is_new": True},
    ]
    (copy / features.ASSETS_EXTRA_DIR / features.CATALOG_METADATA_FILE).write_text(
        "".join(json.dumps(row) + "\n" for row in rows)
    )
    assert ServedModel(str(copy)).new_items() == 2
