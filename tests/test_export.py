"""End to end through run_fn on a tiny fixture: tft_beam transform → run_fn → the serving SavedModel.

The fixture (built once per test session, ~30 s): 10 catalog items (i8, i9 cold: never in an interaction),
5 users, a tiny random BERT over the MiniLM vocabulary, 2 epochs. Checks are about the serving contract,
not quality.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model_utils
from tfx import v1 as tfx

from serving.client_error import ServingClientError
from serving.local_client import LocalClient
from serving.recommend_request import filter_names, pad_histories, recommend_inputs
from tests.tiny_bert import write_tiny_bert
from trainer import bert, blend, export, features, item_item, preprocessing, train

TOP_K = 3
RERANK_POOL = 6  # below the catalog size (10), so the pool clamp (>= k) is exercised
ITEMS = [f"i{n}" for n in range(10)]
TRAIN_ITEMS = ITEMS[:8]
USERS = ["u0", "u1", "u2", "u3", "u4"]

RAW_SPEC = {
    **{
        name: tf.io.FixedLenFeature([1], tf.string)
        for name in (features.USER_ID, features.ITEM_ID, features.TITLE, features.TEXT, features.BRAND)
    },
    features.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64),
    features.LABEL: tf.io.FixedLenFeature([1], tf.float32),
    features.PRICE: tf.io.FixedLenFeature([1], tf.float32),
    features.HISTORY: tf.io.VarLenFeature(tf.string),
    features.CATEGORIES: tf.io.VarLenFeature(tf.string),
}


def _item(item_id: str) -> dict:
    n = int(item_id[1:])
    return {
        features.ITEM_ID: [item_id.encode()],
        features.TITLE: [f"item {n}".encode()],
        features.TEXT: [f"{'red pen' if n % 2 else 'blue paper'} number {n}".encode()],
        features.BRAND: [b"acme" if n % 3 else b""],
        features.CATEGORIES: [b"office", b"pens" if n % 2 else b"paper"],
        features.PRICE: [float(n + 1)],
    }


def _item_metadata(item_ids: list[str]) -> dict:
    """BRAND and CATEGORIES of the items, as `train.load_catalog` returns them."""
    items = [_item(i) for i in item_ids]
    return {
        features.BRAND: [item[features.BRAND][0].decode() for item in items],
        features.CATEGORIES: [[c.decode() for c in item[features.CATEGORIES]] for item in items],
    }


def _interaction(user: str, item_id: str, history: list[str], label: float, timestamp: int) -> dict:
    return {
        **_item(item_id),
        features.USER_ID: [user.encode()],
        features.HISTORY: [h.encode() for h in history],
        features.TIMESTAMP: [timestamp],
        features.LABEL: [label],
    }


def _interactions(seed: int, rows: int) -> list[dict]:
    """User u likes items of its parity; histories are earlier positives of the same parity."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(rows):
        user = USERS[t % len(USERS)]
        parity = int(user[1:]) % 2
        liked = [i for i in TRAIN_ITEMS if int(i[1:]) % 2 == parity]
        history = list(rng.choice(liked, size=int(rng.integers(0, 4)), replace=False))
        out.append(_interaction(user, str(rng.choice(liked)), history, 1.0, t))
        out.append(_interaction(user, str(rng.choice(TRAIN_ITEMS)), history, 0.0, t))
    return out


def _serialize(row: dict) -> bytes:
    def feature(values):
        if isinstance(values[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if isinstance(values[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    return tf.train.Example(
        features=tf.train.Features(
            feature={name: feature(values) for name, values in row.items() if len(values)}
        )
    ).SerializeToString()


def _write_gzip(path: str, records: list[bytes]) -> str:
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    return path


def _instance(row: dict) -> dict:
    """A tft_beam instance dict: FixedLen [1] values as 1-element arrays, VarLen as lists."""
    dtypes = {tf.string: object, tf.int64: np.int64, tf.float32: np.float32}
    return {name: np.asarray(row.get(name, []), dtypes[spec.dtype]) for name, spec in RAW_SPEC.items()}


def _transform(workdir: str, vocab_file: str, train_rows: list[dict], eval_rows: list[dict]):
    """AnalyzeAndTransformDataset on train; writes transformed train/eval TFRecords and the transform_fn."""
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(RAW_SPEC)
    custom_config = {preprocessing.BERT_VOCAB: vocab_file}
    transform_dir = os.path.join(workdir, "transform_output")
    tft_tmp = os.path.join(workdir, "tft_tmp")
    # FnApiRunner: the default DirectRunner first tries to download the Prism runner.
    with beam.Pipeline(runner=FnApiRunner()) as pipeline, tft_beam.Context(temp_dir=tft_tmp):
        raw_train = pipeline | "Train" >> beam.Create([_instance(r) for r in train_rows])
        raw_eval = pipeline | "Eval" >> beam.Create([_instance(r) for r in eval_rows])
        (transformed_train, transformed_metadata), transform_fn = (
            raw_train,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, custom_config)
        )
        transformed_eval, _ = ((raw_eval, metadata), transform_fn) | tft_beam.TransformDataset()
        coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
        for name, data in (("train", transformed_train), ("eval", transformed_eval)):
            _ = (
                data
                | f"Encode{name}" >> beam.Map(coder.encode)
                | f"Write{name}"
                >> beam.io.WriteToTFRecord(os.path.join(workdir, name, "part"), file_name_suffix=".gz")
            )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    # TFX's Transform also writes the raw schema, which TFTransformOutput.raw_feature_spec() reads.
    metadata_io.write_metadata(metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return transform_dir


class Trained(NamedTuple):
    serving_dir: str
    workdir: str
    eval_rows: list[dict]
    module: export.ServingModule  # the live module run_fn exported


def build_trained(tmp_path_factory) -> Trained:
    """Runs run_fn once: tests/conftest.py's session fixture `trained` (shared by every module that asks)."""
    workdir = str(tmp_path_factory.mktemp("e2e"))
    try:
        minilm = bert.fetch_minilm()
    except RuntimeError as e:  # no network and no cached copy
        pytest.skip(f"MiniLM vocabulary unavailable: {e}")
    vocab_file = os.path.join(workdir, "vocab.txt")  # a copy, deleted before the relocation check
    shutil.copyfile(minilm / bert.VOCAB_FILE, vocab_file)
    bert_dir = write_tiny_bert(os.path.join(workdir, "bert"), vocab_file, hidden=16, layers=1, heads=2)
    train_rows, eval_rows = _interactions(0, 40), _interactions(1, 6)
    transform_dir = _transform(workdir, vocab_file, train_rows, eval_rows)
    catalog = _write_gzip(os.path.join(workdir, "catalog.gz"), [_serialize(_item(i)) for i in ITEMS])
    serving_dir = os.path.join(workdir, "serving")
    fn_args = tfx.components.FnArgs(
        train_files=[os.path.join(workdir, "train", "*")],
        eval_files=[os.path.join(workdir, "eval", "*")],
        transform_output=transform_dir,
        serving_model_dir=serving_dir,
        train_steps=None,
        eval_steps=None,
        custom_config={
            "catalog_files": [catalog],
            "bert": str(bert_dir),
            "epochs": 2,
            "batch_size": 16,
            "embedding_dim": 8,
            "top_k": TOP_K,
            "logq_beta": 0.5,
            "mixed_negatives": 3,
            "id_dropout": 0.3,
            "rerank_pool": RERANK_POOL,
        },
    )
    exported = []
    export_serving_model = export.export_serving_model

    def keep_module(*args, **kwargs):
        exported.append(export_serving_model(*args, **kwargs))
        return exported[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_serving_model", keep_module)
        train.run_fn(fn_args)
    return Trained(serving_dir, workdir, eval_rows, exported[0])


@pytest.fixture(scope="module")
def loaded(trained):
    """The exported SavedModel, loaded once (each load takes seconds)."""
    return tf.saved_model.load(trained.serving_dir)


@pytest.fixture(scope="module")
def local_client(trained):
    return LocalClient(trained.serving_dir)


_DTYPES = {
    features.K: tf.int32,
    features.MMR_LAMBDA: tf.float32,
    features.XQUAD_LAMBDA: tf.float32,
    features.KEEP_HISTORY: tf.int32,
    features.NEW_ITEM_BOOST: tf.float32,
}


def _recommend_inputs(
    users,
    histories,
    k,
    mmr_lambda=0.0,
    xquad_lambda=0.0,
    keep_history=0,
    filters=None,
    new_item_boost=0.0,
) -> dict[str, tf.Tensor]:
    """The request builder's inputs (empty filters unless given) as the signature's tensors."""
    knobs = {features.MMR_LAMBDA: mmr_lambda, features.XQUAD_LAMBDA: xquad_lambda}
    knobs |= {features.KEEP_HISTORY: keep_history, features.NEW_ITEM_BOOST: new_item_boost}
    inputs = recommend_inputs(users, histories, k, knobs, filters)
    return {name: tf.constant(value, _DTYPES.get(name, tf.string)) for name, value in inputs.items()}


def _recommend(loaded, users, histories, k, mmr_lambda=0.0, xquad_lambda=0.0, keep_history=0, **kw):
    """kw: filters, new_item_boost (as `_recommend_inputs` takes them)."""
    inputs = _recommend_inputs(users, histories, k, mmr_lambda, xquad_lambda, keep_history, **kw)
    out = loaded.signatures[features.RECOMMEND_SIGNATURE](**inputs)
    return {name: value.numpy() for name, value in out.items()}


def test_recommend_excludes_history_and_handles_unknowns(loaded):
    history = ["i0", "i2", "i4", "i6", "i9"]
    out = _recommend(loaded, ["u0", "stranger"], [history, ["nope", "i1"]], k=4)
    assert {name: value.shape for name, value in out.items()} == {
        features.ITEM_IDS: (2, 4),
        features.SCORES: (2, 4),
        features.IS_TAIL: (2, 4),
        features.BECAUSE: (2, 4),
        features.REASON: (2, 4),
    }
    ids = out[features.ITEM_IDS]
    known = {i.encode() for i in ITEMS}
    assert set(ids.ravel()) <= known
    assert not {h.encode() for h in history} & set(ids[0])
    assert b"i1" not in ids[1]
    assert len(set(ids[1])) == 4  # unknown user + unknown history id still gets 4 distinct items
    assert (np.diff(out[features.SCORES], axis=1) <= 0).all()  # λ = 0: the base ranking
    assert set(out[features.IS_TAIL].ravel()) <= {0, 1}
    # k larger than the catalog (and the pool): clamped to the 10 items; the 5 history slots are padding.
    everything = _recommend(loaded, ["u0"], [history], k=50)
    assert everything[features.ITEM_IDS].shape == (1, 10)
    assert set(everything[features.ITEM_IDS][0, :5]) == known - {h.encode() for h in history}
    assert everything[features.ITEM_IDS][0, 5:].tolist() == [b""] * 5
    assert (everything[features.SCORES][0, 5:] == np.finfo(np.float32).min).all()
    assert everything[features.IS_TAIL][0, 5:].tolist() == [0] * 5


def test_recommend_keeps_history_items_rankable_only_with_keep_history_1(loaded):
    users, histories = ["u0", "stranger"], [["i0", "i2", "i4"], ["i1", "nope"]]
    sent = [{h.encode() for h in history} & {i.encode() for i in ITEMS} for history in histories]
    excluded = _recommend(loaded, users, histories, k=10)
    kept = _recommend(loaded, users, histories, k=10, keep_history=1)
    for row, history in enumerate(sent):
        assert not history & set(excluded[features.ITEM_IDS][row])  # 0: never a history item
        assert set(kept[features.ITEM_IDS][row]) == {i.encode() for i in ITEMS}  # 1: the whole catalog
        # History items are scored like any other: the other items keep their scores, and the excluded
        # list is the kept one without the history items (padded at the end).
        scored = dict(zip(kept[features.ITEM_IDS][row], kept[features.SCORES][row], strict=True))
        rest = [i for i in kept[features.ITEM_IDS][row] if i not in history]
        assert excluded[features.ITEM_IDS][row].tolist() == rest + [b""] * len(history)
        np.testing.assert_allclose(
            excluded[features.SCORES][row][: len(rest)], [scored[i] for i in rest], rtol=1e-6
        )
    # A shorter list with history kept is the head of the same ranking (pool and re-ranker change nothing).
    top = _recommend(loaded, users, histories, k=3, keep_history=1)[features.ITEM_IDS]
    np.testing.assert_array_equal(top, kept[features.ITEM_IDS][:, :3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="keep_history must be 0 or 1"):
        _recommend(loaded, users, histories, k=3, keep_history=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="keep_history must be 0 or 1"):
        _recommend(loaded, users, histories, k=3, keep_history=-1)


def test_new_item_boost_lifts_exactly_the_new_items_by_its_value(loaded):
    users, histories = ["u0", "stranger"], [["i0", "i2"], []]
    new = {i.encode() for i in ITEMS if i not in TRAIN_ITEMS}  # i8, i9: catalog.jsonl's is_new

    def scored(boost: float) -> list[dict]:
        out = _recommend(loaded, users, histories, k=10, new_item_boost=boost)
        rows = zip(out[features.ITEM_IDS], out[features.SCORES], strict=True)
        return [dict(zip(ids, scores, strict=True)) for ids, scores in rows]

    plain, boosted = scored(0.0), scored(0.25)
    for before, after in zip(plain, boosted, strict=True):
        before.pop(b"", None), after.pop(b"", None)
        assert set(before) == set(after) and new <= set(before)
        for item, score in before.items():
            lift = 0.25 if item in new else 0.0
            np.testing.assert_allclose(after[item], score + lift, rtol=1e-5, atol=1e-6)
    # A shorter list is the top of the boosted scores; a large boost puts the new items first.
    for boost, k in ((0.25, 3), (100.0, 2)):
        top = _recommend(loaded, users, histories, k=k, new_item_boost=boost)[features.ITEM_IDS]
        for row, after in zip(top, scored(boost), strict=True):
            assert row.tolist() == sorted(after, key=after.get, reverse=True)[:k]
    assert all(set(row) == new for row in top)
    # The filters still hold: an excluded new item stays out, however large the boost.
    excluded = _recommend(
        loaded, users, histories, k=2, new_item_boost=100.0, filters={features.EXCLUDE_IDS: [["i8"], ["i8"]]}
    )[features.ITEM_IDS]
    assert all(row[0] == b"i9" and b"i8" not in row for row in excluded)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(tf.errors.InvalidArgumentError, match="new_item_boost must be a finite number"):
            _recommend(loaded, users, histories, k=3, new_item_boost=bad)


def _ids(out: dict) -> list[list[str]]:
    return out[features.ITEM_IDS].astype(str).tolist()


def _padded(ids: list[str], k: int) -> list[str]:
    return ids[:k] + [""] * (k - len(ids[:k]))


def test_recommend_exclude_ids_are_never_returned_and_the_list_stays_full(loaded, local_client):
    users, histories = ["u0", "stranger"], [["i0", "i2"], []]
    full = _ids(_recommend(loaded, users, histories, k=10))
    excluded = [full[0][:2] + ["nope"], [full[1][3]]]  # the two best and an unknown id; one further down
    out = _ids(_recommend(loaded, users, histories, k=4, filters={features.EXCLUDE_IDS: excluded}))
    for row in range(len(users)):
        assert out[row] == [i for i in full[row] if i not in excluded[row]][:4] and "" not in out[row]
    # Through a client the filters ride with the knobs (the request builder sorts them out).
    knobs = {features.MMR_LAMBDA: 0.0, features.XQUAD_LAMBDA: 0.0, features.KEEP_HISTORY: 0}
    knobs[features.NEW_ITEM_BOOST] = 0.0
    assert local_client.recommend(users, histories, 4, exclude_ids=excluded, **knobs).item_ids() == out


def test_recommend_allowed_ids_restrict_the_list_and_pad_it(loaded):
    users, histories = ["u0", "u1", "stranger", "u3"], [["i1"], [], [], ["i2"]]
    allowed = [["i1", "i5", "i7", "nope"], ["i2", "i3"], ["nope"], []]
    full = _ids(_recommend(loaded, users, histories, k=10))
    out = _recommend(loaded, users, histories, k=4, filters={features.ALLOWED_IDS: allowed})
    ids = _ids(out)
    assert ids[0] == _padded([i for i in full[0] if i in {"i5", "i7"}], 4)  # i1 is history
    assert ids[1] == _padded([i for i in full[1] if i in {"i2", "i3"}], 4)
    assert ids[2] == [""] * 4  # only unknown ids: nothing passes
    assert ids[3] == full[3][:4]  # an empty row restricts nothing
    assert (out[features.SCORES][2] == np.finfo(np.float32).min).all() and not out[features.IS_TAIL][2].any()


def test_recommend_categories_and_brands_are_any_of(loaded):
    # The fixture's catalog: i<n> has categories office + (pens if n odd else paper), brand acme unless 3 | n.
    cases = [  # (categories, brands, which item numbers pass)
        (["pens"], [], lambda n: n % 2 == 1),
        (["paper", "pens"], [""], lambda n: True),
        (["nope", "paper", ""], [], lambda n: n % 2 == 0),
        ([], ["acme"], lambda n: n % 3 != 0),
        (["pens"], ["acme", "nope"], lambda n: n % 2 == 1 and n % 3 != 0),
        ([], ["nope"], lambda n: False),
    ]
    full = _ids(_recommend(loaded, ["stranger"], [[]], k=10))[0]
    filters = {features.CATEGORIES: [c for c, _, _ in cases], features.BRANDS: [b for _, b, _ in cases]}
    out = _ids(_recommend(loaded, ["stranger"] * len(cases), [[]] * len(cases), k=10, filters=filters))
    for row, (_, _, passes) in enumerate(cases):
        assert out[row] == _padded([i for i in full if passes(int(i[1:]))], 10), cases[row][:2]


def test_recommend_filters_combine_with_history_exclusion_and_keep_history(loaded):
    users, history = ["u1"], ["i1", "i3", "i4"]
    filters = {features.EXCLUDE_IDS: [["i5"]], features.CATEGORIES: [["pens"]]}
    full = _ids(_recommend(loaded, users, [history], k=10, keep_history=1))[0]  # the whole catalog
    for keep, hidden in ((0, set(history)), (1, set())):
        out = _ids(_recommend(loaded, users, [history], k=10, keep_history=keep, filters=filters))[0]
        passing = [i for i in full if int(i[1:]) % 2 and i != "i5" and i not in hidden]
        assert out == _padded(passing, 10), keep  # exclude_ids hold even with keep_history 1
    # The re-rankers pick from the filtered pool: i1, i3 (kept history), i7, i9.
    reranked = _recommend(loaded, users, [history], 4, 0.4, 0.4, keep_history=1, filters=filters)
    assert sorted(_ids(reranked)[0]) == ["i1", "i3", "i7", "i9"]


def test_empty_filters_give_exactly_the_unfiltered_lists(trained, loaded, monkeypatch):
    # The previous behaviour: the same signature code traced without the filter mask, on the live module.
    monkeypatch.setattr(export.ServingModule, "_passes_filters", lambda self, filters: True)
    module = trained.module
    unfiltered = _retraced(module, features.RECOMMEND_SIGNATURE)
    users, histories = ["u0", "u1", "stranger", "u3"], [["i0", "i2"], ["i1"], [], ["nope", "i9", "i4"]]
    zero_width = {name: tf.zeros([len(users), 0], tf.string) for name in features.FILTER_MAX_WIDTH}
    blank = {name: tf.fill([len(users), 3], "") for name in features.FILTER_MAX_WIDTH}
    for k, mmr, xquad, keep in ((3, 0.0, 0.0, 0), (50, 0.0, 0.0, 1), (8, 0.5, 0.0, 0), (5, 0.4, 0.4, 1)):
        inputs = _recommend_inputs(users, histories, k, mmr, xquad, keep)  # the builder's [B, 1] of ""
        expected = unfiltered(**inputs)
        for sent in (inputs, inputs | zero_width, inputs | blank):
            out = loaded.signatures[features.RECOMMEND_SIGNATURE](**sent)
            assert set(out) == set(expected)
            for name in expected:
                np.testing.assert_array_equal(out[name].numpy(), expected[name].numpy(), err_msg=name)


def test_oversized_filters_are_invalid_argument_naming_the_input_and_the_limit(loaded):
    recommend = loaded.signatures[features.RECOMMEND_SIGNATURE]
    for name, limit in features.FILTER_MAX_WIDTH.items():
        inputs = _recommend_inputs(["u0"], [[]], 3)
        assert recommend(**inputs | {name: tf.fill([1, limit], "")})[features.ITEM_IDS].shape == (1, 3)
        message = rf"{name} has {limit + 1} values per row \(padding included\); at most {limit} are accepted"
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            recommend(**inputs | {name: tf.fill([1, limit + 1], "")})


def test_the_request_builder_sends_every_filter_and_rejects_malformed_ones():
    knobs = {features.MMR_LAMBDA: 0.2, features.BRANDS: [["acme"], []]}  # as a client passes them on
    inputs = recommend_inputs(
        ["u1", "u2"], [["i3"], []], 5, knobs, {features.EXCLUDE_IDS: [["i1", "i2"], []]}
    )
    assert inputs == {
        features.USER_ID: ["u1", "u2"],
        features.HISTORY: [["i3"], [""]],
        features.K: 5,
        features.MMR_LAMBDA: 0.2,
        features.EXCLUDE_IDS: [["i1", "i2"], ["", ""]],
        features.ALLOWED_IDS: [[""], [""]],
        features.CATEGORIES: [[""], [""]],
        features.BRANDS: [["acme"], [""]],
    }
    with pytest.raises(ValueError, match=r"no filter\(s\) \['colour'\]; its filters: \['exclude_ids', "):
        recommend_inputs(["u1"], [[]], 5, {}, {"colour": [["red"]]})
    with pytest.raises(ValueError, match="2 users but 1 rows of allowed_ids: one list per user"):
        recommend_inputs(["u1", "u2"], [[], []], 5, {}, {features.ALLOWED_IDS: [["i1"]]})
    with pytest.raises(ValueError, match="categories needs one list of strings per user"):
        recommend_inputs(["u1"], [[]], 5, {}, {features.CATEGORIES: ["pens"]})
    # A model exported before the filters declares none: none are sent, and asking for one is an error.
    older = filter_names([features.USER_ID, features.HISTORY, features.K, "boost"])
    assert older == () and recommend_inputs(["u1"], [[]], 5, {"boost": 1.0}, declared=older) == {
        features.USER_ID: ["u1"],
        features.HISTORY: [[""]],
        features.K: 5,
        "boost": 1.0,
    }
    with pytest.raises(ValueError, match=r"no filter\(s\) \['brands'\]; its filters: \[\]"):
        recommend_inputs(["u1"], [[]], 5, {features.BRANDS: [["acme"]]}, declared=older)
    assert filter_names(reversed(features.FILTER_MAX_WIDTH)) == tuple(features.FILTER_MAX_WIDTH)


def test_recommend_base_ranking_is_serving_default_top_k(trained, loaded):
    eval_rows = trained.eval_rows
    rows = eval_rows[:4]
    top = loaded.signatures[features.SERVING_DEFAULT_SIGNATURE](
        examples=tf.constant([_serialize(r) for r in rows])
    )
    users = [r[features.USER_ID][0].decode() for r in rows]
    histories = [[h.decode() for h in r[features.HISTORY]] for r in rows]
    out = _recommend(loaded, users, histories, k=TOP_K)
    np.testing.assert_array_equal(out[features.ITEM_IDS], top[features.TOP_K_IDS].numpy())
    np.testing.assert_allclose(out[features.SCORES], top[features.TOP_K_SCORES].numpy(), rtol=1e-5)


def test_recommend_rerankers(loaded):
    users, histories = ["u0", "u1", "stranger"], [["i0", "i2"], ["i1"], []]
    for mmr, xquad in ((0.5, 0.0), (0.0, 1.0), (0.4, 0.4)):
        out = _recommend(loaded, users, histories, k=8, mmr_lambda=mmr, xquad_lambda=xquad)  # k > pool
        for row, history in enumerate(histories):
            ids = out[features.ITEM_IDS][row]
            assert len(set(ids)) == 8 and b"" not in ids  # 10 items - history ≥ 8: no repeats, no padding
            assert not {h.encode() for h in history} & set(ids)
    with pytest.raises(tf.errors.InvalidArgumentError, match="<= 1"):
        _recommend(loaded, users, histories, k=3, mmr_lambda=0.7, xquad_lambda=0.7)
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be >= 1"):
        _recommend(loaded, users, histories, k=0)


def test_recommend_xquad_follows_the_reference_on_the_base_pool(loaded):
    # xQuAD alone needs no text vectors, so the numpy reference can re-rank the base pool (the top
    # RERANK_POOL of the λ = 0 ranking) from the signature's own outputs.
    from tests.test_rerank import _reference

    everything = _recommend(loaded, ["u0"], [[]], k=10)
    tail_of = dict(zip(everything[features.ITEM_IDS][0], everything[features.IS_TAIL][0], strict=True))
    reordered = 0
    for user, history in (("u0", ["i0", "i3"]), ("u1", ["i1", "i9", "i5"])):
        base = _recommend(loaded, [user], [history], k=RERANK_POOL)
        tail_prob = np.mean([tail_of[h.encode()] for h in history])
        expected = _reference(
            base[features.SCORES][0].astype(np.float64),
            np.ones(RERANK_POOL, bool),
            np.zeros([RERANK_POOL, 1]),
            base[features.IS_TAIL][0],
            tail_prob,
            4,
            0.0,
            0.5,
        )
        out = _recommend(loaded, [user], [history], k=4, xquad_lambda=0.5)
        assert out[features.ITEM_IDS][0].tolist() == base[features.ITEM_IDS][0][expected].tolist()
        reordered += expected != [0, 1, 2, 3]
    assert reordered  # the case discriminates: xQuAD changed at least one list


def _catalog_rows(trained) -> dict[str, dict]:
    """item id → its assets.extra catalog metadata row (IS_NEW, IS_TAIL as the model flags them)."""
    path = os.path.join(trained.serving_dir, features.ASSETS_EXTRA_DIR, features.CATALOG_METADATA_FILE)
    with open(path, encoding="utf-8") as f:
        return {row[features.ITEM_ID]: row for row in map(json.loads, f)}


def _pooling_weights(trained) -> np.ndarray:
    """[HISTORY_LENGTH] the slot weights the fixture's query tower pools with (position pooling)."""
    pooling = trained.module.model.query_tower.position_pooling
    one_hot = tf.eye(features.HISTORY_LENGTH)[tf.newaxis]  # item j's vector is e_j: pooled[j] = weight j
    return pooling(one_hot, tf.ones([1, features.HISTORY_LENGTH], tf.bool)).numpy()[0]


def _expected_explanation(loaded, weights, catalog, history, ids) -> list[tuple[set[str], str]]:
    """numpy reference of one row: per slot, the acceptable `because` ids (ties within 1e-5), the reason."""
    recent = ([""] * features.HISTORY_LENGTH + history)[-features.HISTORY_LENGTH :]  # what the tower reads
    out = loaded.signatures[features.ITEM_EMBEDDINGS_SIGNATURE](
        **{features.ITEM_IDS: tf.constant(recent + ids)}
    )
    vectors, found = out[features.EMBEDDINGS].numpy(), out[features.FOUND].numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    usable = found[: len(recent)]
    support = np.where(usable, unit[len(recent) :] @ unit[: len(recent)].T * weights, -np.inf)  # [k, H]
    expected = []
    for item, row in zip(ids, support, strict=True):
        if item == "":
            expected.append(({""}, ""))
            continue
        because = {recent[h] for h in np.flatnonzero(row >= row.max() - 1e-5)} if usable.any() else {""}
        flags = catalog[item]
        if flags[features.IS_NEW]:
            reason = features.REASON_NEW_ITEM
        elif because != {""}:
            reason = features.REASON_TAIL_DISCOVERY if flags[features.IS_TAIL] else features.REASON_SIMILAR_TO
        else:
            reason = features.REASON_POPULAR
        expected.append((because, reason))
    return expected


def _explanations(out: dict) -> list[list[tuple[str, str]]]:
    """[B][k] (because, reason) of a recommend answer."""
    because, reason = out[features.BECAUSE].astype(str), out[features.REASON].astype(str)
    return [list(zip(b, r, strict=True)) for b, r in zip(because.tolist(), reason.tolist(), strict=True)]


def test_recommend_explains_every_slot_of_the_final_list(trained, loaded):
    """because / reason follow the numpy definition per slot, under filters, MMR, xQuAD and padding."""
    catalog, weights = _catalog_rows(trained), _pooling_weights(trained)
    users = ["u0", "u1", "stranger", "u3"]
    histories = [["i0", "i2", "i8"], ["i1", "nope", "i3", "i5"], ["i9"], ["i4", "i7"]]
    filters = {
        features.EXCLUDE_IDS: [["i4"], [], ["i1"], []],
        features.ALLOWED_IDS: [[], [], [], ["i1", "i9"]],
    }
    seen = set()
    for k, mmr, xquad in ((4, 0.0, 0.0), (5, 0.5, 0.0), (8, 0.3, 0.4)):
        out = _recommend(loaded, users, histories, k, mmr, xquad, filters=filters)
        for row, (history, ids) in enumerate(zip(histories, _ids(out), strict=True)):
            expected = _expected_explanation(loaded, weights, catalog, history, ids)
            for slot, (because, reason) in enumerate(_explanations(out)[row]):
                assert because in expected[slot][0] and reason == expected[slot][1], (row, slot, ids[slot])
                assert because in {"", *history}
                seen.add(reason)
        assert _ids(out)[3][2:] == [""] * (k - 2)  # padding: its ("", "") is checked above
    assert seen == {features.REASON_NEW_ITEM, features.REASON_TAIL_DISCOVERY, features.REASON_SIMILAR_TO, ""}


def test_recommend_because_is_the_most_similar_history_item(trained, loaded):
    """One recommended item (allowed_ids) and two history items, one clearly more similar to it (in the
    item_embeddings vectors): that one is the because, whichever slot it is in."""
    catalog, weights = _catalog_rows(trained), _pooling_weights(trained)
    known = [i for i in ITEMS if not catalog[i][features.IS_NEW]]
    out = loaded.signatures[features.ITEM_EMBEDDINGS_SIGNATURE](**{features.ITEM_IDS: tf.constant(known)})
    vectors = out[features.EMBEDDINGS].numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, np.nan)
    target = int(np.nanargmax(np.nanmax(cosine, axis=1) - np.nanmin(cosine, axis=1)))  # the widest gap
    near, far = known[int(np.nanargmax(cosine[target]))], known[int(np.nanargmin(cosine[target]))]
    # More similar than the two newest slots' weights could undo, in either order.
    last_two = weights[-2:] / weights[-2:].max()
    assert np.nanmax(cosine[target]) * last_two.min() > np.nanmin(cosine[target]) * last_two.max() + 0.1
    for history in ([near, far], [far, near]):
        allowed = {features.ALLOWED_IDS: [[known[target]]]}
        answer = _recommend(loaded, ["u0"], [history], k=2, filters=allowed)
        assert _ids(answer) == [[known[target], ""]]
        assert answer[features.BECAUSE].astype(str).tolist() == [[near, ""]]


def test_recommend_explains_one_item_unknown_and_empty_histories(trained, loaded):
    catalog = _catalog_rows(trained)
    users = ["u0", "u1", "stranger", "u2"]
    out = _recommend(loaded, users, [["i1"], ["nope", "i4"], [], ["nope"]], k=10)
    for row, (ids, explained) in enumerate(zip(_ids(out), _explanations(out), strict=True)):
        assert ids.count("") == (1 if row < 2 else 0)  # the one catalog history item is excluded
        for item, (because, reason) in zip(ids, explained, strict=True):
            if item == "":
                assert (because, reason) == ("", "")
            elif catalog[item][features.IS_NEW]:  # cold: i8, i9
                assert reason == features.REASON_NEW_ITEM
            elif row < 2:  # one usable history item explains every item
                assert reason == (
                    features.REASON_TAIL_DISCOVERY
                    if catalog[item][features.IS_TAIL]
                    else features.REASON_SIMILAR_TO
                )
            else:  # no history item in the catalog
                assert reason == features.REASON_POPULAR
            if item:
                assert because == {0: "i1", 1: "i4"}.get(row, "")
    assert {features.REASON_NEW_ITEM, features.REASON_POPULAR} <= set(out[features.REASON][2].astype(str))


def test_supporting_slots_weigh_cosine_by_slot_and_skip_unusable_slots():
    items = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])  # [1, 2, 2]
    history = tf.constant([[[3.0, 3.0], [1.0, 0.1], [0.0, -1.0]]])  # cosine to item 0: 0.71, 0.995, 0
    usable = tf.constant([[True, True, True]])
    equal = export.supporting_slots(items, history, usable, tf.ones([3]))
    assert equal.numpy().tolist() == [[1, 0]]  # cosine, not the dot product (3 for slot 0)
    weighted = export.supporting_slots(items, history, usable, tf.constant([2.0, 1.0, 1.0]))
    assert weighted.numpy().tolist() == [[0, 0]]  # 2 · 0.71 > 0.995
    masked = export.supporting_slots(items, history, tf.constant([[False, True, True]]), tf.ones([3]))
    assert masked.numpy().tolist() == [[1, 1]]


def test_the_exported_slot_weights_are_the_position_poolings(trained):
    exported = trained.module._pooling_weights().numpy()
    np.testing.assert_allclose(exported / exported.sum(), _pooling_weights(trained), rtol=1e-5)


def test_the_saved_model_holds_the_signatures_without_keras_layer_traces(trained):
    """Keras' per-layer call traces (each BERT sublayer's, for Keras' own loader) are left out of the export;
    the signatures' functions and the variables are what TF Serving loads."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(trained.serving_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    (meta_graph,) = saved.meta_graphs
    names = [f.signature.name for f in meta_graph.graph_def.library.function]
    assert names and not [n for n in names if "call_and_return_conditional_losses" in n]
    assert keras_saved_model_utils.should_save_traces()  # the option is Keras' default again after the save
    assert set(meta_graph.signature_def) >= {
        features.SERVING_DEFAULT_SIGNATURE,
        features.RECOMMEND_SIGNATURE,
        features.RANK_SIGNATURE,
        features.ITEM_EMBEDDINGS_SIGNATURE,
        features.TRANSFORM_FEATURES_SIGNATURE,
    }


def test_rank_matches_serving_default_score(trained, loaded):
    eval_rows = trained.eval_rows
    rows = eval_rows[:3]
    expected = loaded.signatures[features.SERVING_DEFAULT_SIGNATURE](
        examples=tf.constant([_serialize(r) for r in rows])
    )[features.SCORE].numpy()
    width = max(len(r[features.HISTORY]) for r in rows) or 1
    history = [
        [h.decode() for h in r[features.HISTORY]] + [""] * (width - len(r[features.HISTORY])) for r in rows
    ]
    # Per row: the example's own item, padding, and two items outside the catalog.
    items = [[r[features.ITEM_ID][0].decode(), "", "nope", "brand-new"] for r in rows]
    out = loaded.signatures[features.RANK_SIGNATURE](
        **{
            features.USER_ID: tf.constant([r[features.USER_ID][0].decode() for r in rows]),
            features.HISTORY: tf.constant(history),
            features.ITEM_IDS: tf.constant(items),
        }
    )
    scores = out[features.SCORES].numpy()
    assert scores.shape == (3, 4)
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-5)
    np.testing.assert_array_equal(scores[:, 1], 0.0)
    assert ((scores[:, 2] > 0) & (scores[:, 2] < 1)).all()
    np.testing.assert_array_equal(scores[:, 2], scores[:, 3])  # unknown items share the OOV vector


@pytest.mark.parametrize(
    "signature, rows, message",
    [
        (features.RECOMMEND_SIGNATURE, (2, 1, None), "user_id has 2 rows but history has 1"),
        (features.RECOMMEND_SIGNATURE, (1, 3, None), "user_id has 1 rows but history has 3"),
        (features.RANK_SIGNATURE, (2, 1, 2), "user_id has 2 rows but history has 1"),
        (features.RANK_SIGNATURE, (2, 2, 1), "user_id has 2 rows but item_ids has 1"),
    ],
)
def test_inputs_with_different_batch_sizes_are_invalid_argument(local_client, signature, rows, message):
    # Before the check, recommend answered one list for 2 user ids and 1 history: the second user vanished.
    users, histories, item_lists = rows
    inputs = {features.USER_ID: [f"u{i}" for i in range(users)], features.HISTORY: [["i1", ""]] * histories}
    if signature == features.RECOMMEND_SIGNATURE:
        inputs |= {features.K: 3, features.MMR_LAMBDA: 0.0, features.XQUAD_LAMBDA: 0.0}
        inputs |= {features.KEEP_HISTORY: 0, features.NEW_ITEM_BOOST: 0.0}
        inputs |= {name: [[""]] * users for name in features.FILTER_MAX_WIDTH}
    else:
        inputs[features.ITEM_IDS] = [["i2", "i3"]] * item_lists
    with pytest.raises(ServingClientError) as raised:
        local_client.predict(inputs, signature)
    assert raised.value.status == "INVALID_ARGUMENT"
    assert f"{message} (every input needs one row per user)" in raised.value.message


def _retraced(module: export.ServingModule, name: str) -> tf.types.experimental.GenericFunction:
    """The module's signature method traced anew (so after a monkeypatch), with the signature's shapes."""
    function = getattr(export.ServingModule, name)
    return tf.function(function.python_function.__get__(module), input_signature=function.input_signature)


def test_the_batch_check_leaves_well_formed_answers_unchanged(trained, loaded, monkeypatch):
    # The previous behaviour: the same signature code traced without the check, on the live exported module.
    monkeypatch.setattr(export, "same_rows", dict)
    module = trained.module
    unchecked = {
        name: _retraced(module, name) for name in (features.RECOMMEND_SIGNATURE, features.RANK_SIGNATURE)
    }
    mismatched = _recommend_inputs(["u0"], [["i0"]], 3) | {features.USER_ID: tf.constant(["u0", "u1"])}
    assert unchecked[features.RECOMMEND_SIGNATURE](**mismatched)[features.ITEM_IDS].shape == (1, 3)  # the bug
    users, histories = ["u0", "u1", "stranger", "u3"], [["i0", "i2"], ["i1"], [], ["nope", "i9", "i4"]]
    for k, mmr, xquad in ((3, 0.0, 0.0), (50, 0.0, 0.0), (8, 0.5, 0.0), (4, 0.0, 0.5), (5, 0.4, 0.4)):
        inputs = _recommend_inputs(users, histories, k, mmr, xquad)
        expected = unchecked[features.RECOMMEND_SIGNATURE](**inputs)
        out = loaded.signatures[features.RECOMMEND_SIGNATURE](**inputs)
        assert set(out) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(out[name].numpy(), expected[name].numpy(), err_msg=name)
    rank_inputs = {
        features.USER_ID: tf.constant(users),
        features.HISTORY: tf.constant(pad_histories(histories)),
        features.ITEM_IDS: tf.constant(
            [["i1", "", "nope"], ["i2", "i3", "i4"], ["i9", "i0", ""], ["", "", ""]]
        ),
    }
    expected = unchecked[features.RANK_SIGNATURE](**rank_inputs)[features.SCORES].numpy()
    out = loaded.signatures[features.RANK_SIGNATURE](**rank_inputs)[features.SCORES].numpy()
    np.testing.assert_array_equal(out, expected)
    assert out.shape == (4, 3) and out[3].tolist() == [0.0, 0.0, 0.0]


def test_item_embeddings(loaded):
    out = loaded.signatures[features.ITEM_EMBEDDINGS_SIGNATURE](
        **{features.ITEM_IDS: tf.constant(["i1", "i9", "nope", "other", "i1"])}
    )
    vectors, found = out[features.EMBEDDINGS].numpy(), out[features.FOUND].numpy()
    assert vectors.shape == (5, 8)
    assert found.tolist() == [True, True, False, False, True]
    np.testing.assert_array_equal(vectors[0], vectors[4])
    np.testing.assert_array_equal(vectors[2], vectors[3])
    assert not np.allclose(vectors[0], vectors[1])
    # The recommend scores are the dot products of the query with these vectors: same ordering by score.
    rec = _recommend(loaded, ["u0"], [[]], k=10)
    emb = loaded.signatures[features.ITEM_EMBEDDINGS_SIGNATURE](
        **{features.ITEM_IDS: tf.constant(rec[features.ITEM_IDS][0])}
    )[features.EMBEDDINGS].numpy()
    query, *_ = np.linalg.lstsq(emb, rec[features.SCORES][0], rcond=None)
    np.testing.assert_allclose(emb @ query, rec[features.SCORES][0], rtol=1e-3, atol=1e-4)


def test_serving_default_and_transform_features(trained, loaded):
    eval_rows = trained.eval_rows
    rows = [{k: v for k, v in row.items() if k != features.LABEL} for row in eval_rows[:4]]  # no labels
    out = loaded.signatures["serving_default"](examples=tf.constant([_serialize(r) for r in rows]))
    out = {name: value.numpy() for name, value in out.items()}
    assert out[features.SCORE].shape == (4,)
    assert ((out[features.SCORE] > 0) & (out[features.SCORE] < 1)).all()
    assert out[features.TOP_K_IDS].shape == (4, TOP_K) and out[features.TOP_K_SCORES].shape == (4, TOP_K)
    assert out[features.TOP_K_IS_TAIL].dtype == np.int64
    assert len(set(out[features.NUM_TAIL_ITEMS])) == 1
    for row, top in zip(rows, out[features.TOP_K_IDS], strict=True):
        assert not set(row[features.HISTORY]) & set(top)
    # An item outside the catalog: its text vector comes from BERT run on its own tokens.
    unknown = {**eval_rows[0], features.ITEM_ID: [b"brand-new"], features.TEXT: [b"a green stapler"]}
    cold = loaded.signatures["serving_default"](examples=tf.constant([_serialize(unknown)]))
    assert 0 < float(cold[features.SCORE][0]) < 1
    transformed = loaded.signatures["transform_features"](examples=tf.constant([_serialize(eval_rows[0])]))
    assert transformed[features.ITEM_IS_TAIL].shape == (1,)
    assert transformed[features.INPUT_IDS].shape == (1, features.MAX_TOKENS)
    # The cold catalog item i9 (only in the catalog) is tail.
    tail = _recommend(loaded, ["u0"], [[]], k=10)
    flags = dict(zip(tail[features.ITEM_IDS][0], tail[features.IS_TAIL][0], strict=True))
    assert flags[b"i9"] == 1


def test_with_default_raw_features_fills_missing():
    raw = {features.USER_ID: tf.constant([[b"u1"], [b"u2"]])}
    filled = export.with_default_raw_features(raw, RAW_SPEC)
    assert set(filled) == set(RAW_SPEC)
    np.testing.assert_array_equal(filled[features.TEXT].numpy(), [[b""], [b""]])
    np.testing.assert_array_equal(filled[features.LABEL].numpy(), [[0.0], [0.0]])
    assert filled[features.TIMESTAMP].dtype == tf.int64
    history = filled[features.HISTORY]
    assert isinstance(history, tf.SparseTensor) and history.dense_shape.numpy().tolist() == [2, 0]
    assert filled[features.USER_ID] is raw[features.USER_ID]
    # Parsing with the optional spec accepts an example that has only an item id.
    spec = export.optional_raw_spec(RAW_SPEC)
    parsed = tf.io.parse_example([_serialize({features.ITEM_ID: [b"i1"]})], spec)
    assert parsed[features.PRICE].numpy().tolist() == [[0.0]]


def test_saved_model_is_relocatable(trained, tmp_path):
    serving_dir, workdir = trained.serving_dir, trained.workdir
    moved = str(tmp_path / "moved")
    shutil.copytree(serving_dir, moved)
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops, as TF Serving links them)
        loaded = tf.saved_model.load({moved!r})
        out = loaded.signatures["recommend"](user_id=tf.constant(["u1"]), history=tf.constant([["i1", ""]]),
                                             k=tf.constant(3), mmr_lambda=tf.constant(0.3),
                                             xquad_lambda=tf.constant(0.3), keep_history=tf.constant(0),
                                             new_item_boost=tf.constant(0.0),
                                             exclude_ids=tf.constant([["i2"]]),
                                             allowed_ids=tf.constant([[""]]), categories=tf.constant([[""]]),
                                             brands=tf.constant([[""]]))
        ids = out["item_ids"].numpy()
        assert ids.shape == (1, 3) and b"i1" not in ids[0] and b"i2" not in ids[0], ids
        print("OK", ids.tolist())
    """)
    # Hide the original export, the transform graph, the BERT folder and vocab.txt while the copy runs
    # (renamed rather than deleted, so that the module fixture stays usable whatever the test order).
    hidden = workdir + ".hidden"
    os.rename(workdir, hidden)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=str(tmp_path)
        )
    finally:
        os.rename(hidden, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


def test_export_writes_the_catalog_metadata_of_every_catalog_item(trained, loaded):
    folder = os.path.join(trained.serving_dir, features.ASSETS_EXTRA_DIR)
    # nothing left aside (the refresh kit is run_fn's, trainer/refresh_kit.py)
    expected = [features.CATALOG_METADATA_FILE, features.BLEND_SUMMARY_FILE, features.REFRESH_KIT_DIR]
    assert sorted(os.listdir(folder)) == sorted(expected)
    with open(os.path.join(folder, features.CATALOG_METADATA_FILE), encoding="utf-8") as f:
        lines = f.read().splitlines()
    # The documented format, for the cold item i9 (only in the catalog): new, and tail like every OOV item.
    assert lines[9] == (
        '{"item_id": "i9", "title": "item 9", "brand": "", "categories": ["office", "pens"], '
        '"is_tail": true, "is_new": true}'
    )
    served = _recommend(loaded, ["stranger"], [[]], k=10)  # every catalog item with the flag it serves
    ids, flags = served[features.ITEM_IDS][0].astype(str).tolist(), served[features.IS_TAIL][0].tolist()
    is_tail = {item_id: flag == 1 for item_id, flag in zip(ids, flags, strict=True)}
    assert set(is_tail.values()) == {True, False}  # the toy catalog has both: the flags discriminate
    rows = [json.loads(line) for line in lines]
    assert {tuple(row) for row in rows} == {features.CATALOG_METADATA_FIELDS}  # every field, in that order
    assert rows == [
        {
            features.ITEM_ID: item_id,
            features.TITLE: f"item {n}",
            features.BRAND: "acme" if n % 3 else "",
            features.CATEGORIES: ["office", "pens" if n % 2 else "paper"],
            features.IS_TAIL: is_tail[item_id],
            features.IS_NEW: item_id not in TRAIN_ITEMS,
        }
        for n, item_id in enumerate(ITEMS)
    ]


def test_catalog_metadata_is_replaced_whole_and_needs_one_value_per_item(tmp_path):
    catalog = {
        features.ITEM_ID: np.array([b"a", b"b"], object),
        features.ITEM_INDEX: np.array([0, 2]),  # vocabulary of 2 items: b is out of it
        features.ITEM_IS_TAIL: np.array([0, 1]),
    }
    metadata = {features.TITLE: ["A", "Bé"], features.BRAND: ["x", ""], features.CATEGORIES: [["c"], []]}
    rows = export.catalog_metadata(catalog, metadata, num_items=2)
    assert [(r[features.ITEM_ID], r[features.IS_TAIL], r[features.IS_NEW]) for r in rows] == [
        ("a", False, False),
        ("b", True, True),
    ]
    # b out of the vocabulary but rated below the threshold: known, not new.
    seen = np.array([True, True])
    assert [r[features.IS_NEW] for r in export.catalog_metadata(catalog, metadata, 2, seen)] == [False, False]
    path = tmp_path / features.ASSETS_EXTRA_DIR / features.CATALOG_METADATA_FILE
    path.parent.mkdir()
    path.write_text("an older version's file\n")
    assert export.write_catalog_metadata(rows, str(tmp_path)) == str(path)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert sorted(os.listdir(path.parent)) == [features.CATALOG_METADATA_FILE]
    with pytest.raises(ValueError, match=r"differ in length: \{'item_id': 2, 'title': 1, "):
        export.catalog_metadata(catalog, {**metadata, features.TITLE: ["A"]}, num_items=2)


def test_recommend_serves_the_blend_of_towers_popularity_and_item_item_scores(trained, local_client):
    """A module with every term on (the fixture's own choice turned them off) ranks by the numpy definition:
    cos + gamma · τ · log p + alpha · scaled cf (cold items: fill × cold_gain) + cold_offset on cold items
    (trainer/blend.py), the same as the choice used."""
    module = trained.module
    ids = module.catalog_ids.numpy()
    x = item_item.interaction_matrix(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 2, 3, 4]), len(ids))
    counts = np.array([5, 9, 1, 2, 3, 1, 0, 0, 0, 0])  # items 6..9: no positives, text-filled popularity
    vectors = module.candidate_vectors.numpy()
    chosen = blend.Blend(item_item.COSINE, recency=0.5, alpha=0.7, gamma=0.6, cold_gain=2.0, cold_offset=0.05)
    served = blend.served_blend(chosen, x, counts, vectors, neighbours=3, pop_scale=0.1)
    np.testing.assert_allclose(served.fill.weights.sum(axis=1), 2.0, rtol=1e-6)  # the cf fill, gained
    blended = export.ServingModule(
        module.model,
        module.tft_layer,
        module._raw_spec,
        ids,
        vectors,
        module.catalog_is_tail.numpy(),
        module.catalog_is_new.numpy(),
        module.unknown_vector.numpy(),
        float(module.tail_prior.numpy()),
        served,
        TOP_K,
        RERANK_POOL,
        _item_metadata([i.decode() for i in ids]),
    )
    history = ["i1", "i3"]
    inputs = _recommend_inputs(["u0"], [history], k=len(ids))
    query, _ = module._query(inputs[features.USER_ID], inputs[features.HISTORY])
    cos = dict(zip(ids, (query.numpy() @ vectors.T)[0], strict=True))
    out = blended.recommend(**inputs)
    rows = {item_id: row for row, item_id in enumerate(ids)}
    history_rows = np.full([1, features.HISTORY_LENGTH], item_item.PAD)
    history_rows[0, -2:] = [rows[b"i1"], rows[b"i3"]]
    cf = item_item.scale_per_user(
        item_item.apply_fill(item_item.cf_scores(served.table, history_rows, 0.5), served.fill)
    )
    expected = {
        item_id: cos[item_id]
        + 0.6 * 0.1 * served.log_prob[rows[item_id]]
        + 0.7 * cf[0, rows[item_id]]
        + 0.05 * (counts[rows[item_id]] == 0)
        for item_id in cos
        if item_id not in (b"i1", b"i3")
    }
    got = dict(zip(out[features.ITEM_IDS].numpy()[0], out[features.SCORES].numpy()[0], strict=True))
    got.pop(b"", None)
    assert set(got) == set(expected) and not {b"i1", b"i3"} & set(got)
    np.testing.assert_allclose([got[i] for i in expected], list(expected.values()), rtol=1e-5, atol=1e-6)
    order = out[features.ITEM_IDS].numpy()[0][: len(expected)].tolist()
    assert order == sorted(expected, key=lambda i: -expected[i])
    assert cf[0].max() == pytest.approx(1.0) and (cf[0] > 0).sum() >= 3  # the term did something
    assert cf[0, 6:].max() > 0  # and the gained text fill reached the items without positives


def test_an_item_only_histories_hold_adds_its_neighbours_to_the_served_score(trained):
    """A refresh's removed item (blend.served_blend's history_only) is no candidate but, in a history,
    still adds its item-item neighbours' scores, as the numpy definition does."""
    module = trained.module
    ids = module.catalog_ids.numpy()
    n = len(ids)
    # Column n is "gone": users 0 and 1 took it with items 0 and 1; user 2 took items 2 and 3.
    x = item_item.interaction_matrix(np.array([0, 0, 1, 1, 2, 2]), np.array([0, n, 1, n, 2, 3]), n + 1)
    vectors = module.candidate_vectors.numpy()
    chosen = blend.Blend(item_item.COSINE, recency=0.5, alpha=1.0)
    served = blend.served_blend(chosen, x, np.ones(n), vectors, 3, 0.1, history_only=[b"gone"])
    assert served.table.rows.shape[0] == n + 1 and served.table.rows.max() < n
    args = (module.model, module.tft_layer, module._raw_spec, ids)
    rest = (module.catalog_is_tail.numpy(), module.catalog_is_new.numpy(), module.unknown_vector.numpy())
    metadata = _item_metadata([i.decode() for i in ids])
    with_gone = export.ServingModule(*args, vectors, *rest, 0.2, served, TOP_K, RERANK_POOL, metadata)
    inputs = _recommend_inputs(["u0"], [["gone"]], k=n)
    query, _ = module._query(inputs[features.USER_ID], inputs[features.HISTORY])
    history_rows = np.full([1, features.HISTORY_LENGTH], item_item.PAD)
    history_rows[0, -1] = n
    cf = item_item.scale_per_user(
        item_item.apply_fill(item_item.cf_scores(served.table, history_rows, 0.5, num_items=n), served.fill)
    )
    assert cf[0, 0] == cf[0, 1] == pytest.approx(1.0) and cf[0, 2] == 0  # gone's neighbours, only them
    out = with_gone.recommend(**inputs)
    got = dict(zip(out[features.ITEM_IDS].numpy()[0], out[features.SCORES].numpy()[0], strict=True))
    expected = dict(zip(ids, (query.numpy() @ vectors.T)[0] + cf[0], strict=True))
    np.testing.assert_allclose([got[i] for i in ids], [expected[i] for i in ids], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="item-item rows"):  # a table without the history-only row
        export.ServingModule(
            *args,
            vectors,
            *rest,
            0.2,
            dataclasses.replace(served, history_only_ids=np.zeros(0, object)),
            TOP_K,
            RERANK_POOL,
            metadata,
        )


def test_load_catalog_reads_each_items_negative_ratings_zero_when_absent(trained):
    rated = {**_item("i0"), features.NEGATIVE_RATINGS: [3]}
    records = [_serialize(rated), _serialize(_item("i1"))]
    path = _write_gzip(os.path.join(trained.workdir, "rated-catalog.gz"), records)
    transform = tft.TFTransformOutput(os.path.join(trained.workdir, "transform_output"))
    catalog, metadata = train.load_catalog(path, transform)
    assert catalog[features.ITEM_ID].reshape(-1).tolist() == [b"i0", b"i1"]
    assert metadata[features.NEGATIVE_RATINGS] == [3, 0]
