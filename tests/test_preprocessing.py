"""trainer.preprocessing: one tiny TFT Beam analysis (module fixture) checked against hand-computed values."""

import functools
import math
import shutil

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from trainer import features, preprocessing

RAW_SPEC = {
    features.USER_ID: tf.io.FixedLenFeature([], tf.string),
    features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    features.HISTORY: tf.io.VarLenFeature(tf.string),
    features.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    features.LABEL: tf.io.FixedLenFeature([], tf.float32),
    features.TITLE: tf.io.FixedLenFeature([], tf.string),
    features.TEXT: tf.io.FixedLenFeature([], tf.string),
    features.BRAND: tf.io.FixedLenFeature([], tf.string),
    features.CATEGORIES: tf.io.VarLenFeature(tf.string),
    features.PRICE: tf.io.FixedLenFeature([], tf.float32),
    features.SLOT: tf.io.VarLenFeature(tf.int64),  # as the schema's optional `slot` parses
}
ITEM_ONLY = (features.ITEM_ID, features.TITLE, features.TEXT, features.BRAND, features.CATEGORIES,
             features.PRICE)

# Positive interactions: a x4, b x3, c x2, d x1 (total 10); negatives: e (never positive) and a.
ITEMS = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d", "e", "a"]
LABELS = [1.0] * 10 + [0.0, 0.0]
USERS = ["u1"] * 6 + ["u2"] * 4 + ["u3"] * 2  # vocab u1, u2, u3; OOV -> 3
BRANDS = ["acme"] * 7 + ["bolt"] * 4 + [""]  # vocab acme, bolt; "" is never a vocab entry -> OOV 2
# office x5, paper x4, desk x3, pens x2, ink x1 -> indices 0..4; the first row has 5, keeps 4.
CATEGORIES = [["office", "paper", "desk", "pens", "ink"], ["office", "paper", "desk", "pens"],
              ["office", "paper", "desk"], ["office", "paper"], ["office"]] + [[]] * 7
# log1p(price) is 0 for even rows and 2 for odd rows: mean 1, std 1, so z = -1 / +1.
PRICES = [0.0 if i % 2 == 0 else math.exp(2.0) - 1.0 for i in range(12)]
HISTORIES = [["a", "x", "b"], ["d"] + ["a"] * 23 + ["c"], []] + [["a"]] * 9
TEXTS = ["Office Staplers!", " ".join(["office"] * 70)] + ["stapler"] * 10
# Displayed slots of logged examples ([] = absent): slots 0 and 3, the last own bucket, one past it.
LAST = features.MAX_POSITION
POSITIONS = [[], [0], [3], [LAST - 1], [LAST + 7]] + [[]] * 7

# A WordPiece vocabulary laid out like BERT uncased: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102.
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + ["office", "stapler", "##s"])
OFFICE, STAPLER, PLURAL_S = 104, 105, 106


def _rows() -> list[dict]:
    return [
        {features.USER_ID: USERS[i], features.ITEM_ID: ITEMS[i], features.HISTORY: HISTORIES[i],
         features.TIMESTAMP: i, features.LABEL: LABELS[i], features.TITLE: f"title {i}",
         features.TEXT: TEXTS[i], features.BRAND: BRANDS[i], features.CATEGORIES: CATEGORIES[i],
         features.PRICE: PRICES[i], features.SLOT: POSITIONS[i]}
        for i in range(len(ITEMS))
    ]


def _serialize(row: dict) -> bytes:
    feature = {}
    for key, value in row.items():
        values = value if isinstance(value, list) else [value]
        if not values:  # absent, which every VarLenFeature reads as empty
            continue
        if isinstance(values[0] if values else "", str):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
        elif isinstance(values[0], int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _raw_batch(rows: list[dict], keys=tuple(RAW_SPEC)) -> dict:
    spec = {k: RAW_SPEC[k] for k in keys}
    return tf.io.parse_example([_serialize({k: r[k] for k in keys}) for r in rows], spec)


def _transform(transform_dir: str, rows: list[dict], keys=tuple(RAW_SPEC)) -> dict:
    out = tft.TFTransformOutput(transform_dir).transform_raw_features(_raw_batch(rows, keys))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory) -> dict:
    """Analyzes the 12 rows with Beam; returns the transform dir, the vocab path and the transformed rows."""
    tmp = tmp_path_factory.mktemp("tft")
    vocab_path = tmp / "vocab.txt"
    vocab_path.write_text("\n".join(VOCAB) + "\n")
    transform_dir = str(tmp / "transform_fn")
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
    fn = functools.partial(preprocessing.preprocessing_fn,
                           custom_config={preprocessing.BERT_VOCAB: str(vocab_path)})
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp / "beam")):
        raw = pipeline | beam.Create(_rows())
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    return {"dir": transform_dir, "vocab": vocab_path, "out": _transform(transform_dir, _rows())}


def test_item_vocabulary_counts_only_positives(analyzed):
    vocab = tft.TFTransformOutput(analyzed["dir"]).vocabulary_by_name(features.ITEM_VOCAB)
    assert vocab == [b"4 a", b"3 b", b"2 c", b"1 d"]


def test_item_index_log_prob_and_tail(analyzed):
    out = analyzed["out"]
    index = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}  # e was only a negative: OOV bucket 4
    np.testing.assert_array_equal(out[features.ITEM_INDEX], [index[i] for i in ITEMS])
    # log(count / 10); e counts as 1.
    share = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1, "e": 0.1}
    np.testing.assert_allclose(out[features.ITEM_LOG_PROB], [math.log(share[i]) for i in ITEMS], rtol=1e-6)
    # Head reaches 80%: a + b = 70% < 80%, a + b + c = 90% -> head {a, b, c}; d and OOV e are tail.
    np.testing.assert_array_equal(out[features.ITEM_IS_TAIL], [int(i in "de") for i in ITEMS])
    np.testing.assert_array_equal(out[features.ITEM_ID], [i.encode() for i in ITEMS])
    np.testing.assert_array_equal(out[features.LABEL], LABELS)


def test_history_is_left_padded_truncated_and_looked_up(analyzed):
    out = analyzed["out"]
    length = features.HISTORY_LENGTH
    np.testing.assert_array_equal(out[features.HISTORY_INDEX][0], [-1] * (length - 3) + [0, 4, 1])  # x: OOV
    np.testing.assert_array_equal(out[features.HISTORY_INDEX][1], [0] * (length - 1) + [2])  # newest 20
    np.testing.assert_array_equal(out[features.HISTORY_INDEX][2], [-1] * length)
    assert out[features.HISTORY][0].tolist() == [b""] * (length - 3) + [b"a", b"x", b"b"]
    assert out[features.HISTORY].shape == (12, length)


def test_tokens_have_cls_sep_padding_and_mask(analyzed):
    ids, mask = analyzed["out"][features.INPUT_IDS], analyzed["out"][features.INPUT_MASK]
    assert ids.shape == mask.shape == (12, features.MAX_TOKENS)
    # "Office Staplers!" -> office, stapler ##s, [UNK] for "!".
    expected = [101, OFFICE, STAPLER, PLURAL_S, 100, 102]
    np.testing.assert_array_equal(ids[0], expected + [0] * (features.MAX_TOKENS - 6))
    np.testing.assert_array_equal(mask[0], [1] * 6 + [0] * (features.MAX_TOKENS - 6))
    # 70 words truncated to 62 so that [SEP] still fits.
    np.testing.assert_array_equal(ids[1], [101] + [OFFICE] * 62 + [102])
    assert mask[1].sum() == features.MAX_TOKENS


def test_user_brand_category_and_price(analyzed):
    out = analyzed["out"]
    np.testing.assert_array_equal(out[features.USER_INDEX], [{"u1": 0, "u2": 1, "u3": 2}[u] for u in USERS])
    brand_index = {"acme": 0, "bolt": 1, "": 2}
    np.testing.assert_array_equal(out[features.BRAND_INDEX], [brand_index[b] for b in BRANDS])
    np.testing.assert_array_equal(out[features.CATEGORY_INDEX][:6],
                                  [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, -1], [0, 1, -1, -1],
                                   [0, -1, -1, -1], [-1, -1, -1, -1]])
    np.testing.assert_allclose(out[features.PRICE_Z], [-1.0, 1.0] * 6, atol=1e-5)


def test_position_bucket_is_zero_when_absent_else_one_plus_the_capped_slot(analyzed):
    buckets = analyzed["out"][features.POSITION_BUCKET]
    assert buckets.dtype == np.int64
    np.testing.assert_array_equal(buckets, [0, 1, 4, LAST, LAST] + [0] * 7)


def test_unseen_user_and_item_go_to_oov(analyzed):
    row = dict(_rows()[0], **{features.USER_ID: "u9", features.ITEM_ID: "zz", features.HISTORY: ["zz"]})
    out = _transform(analyzed["dir"], [row])
    assert out[features.USER_INDEX].tolist() == [3]
    assert out[features.ITEM_INDEX].tolist() == [4]
    assert out[features.HISTORY_INDEX][0, -1] == 4
    np.testing.assert_allclose(out[features.ITEM_LOG_PROB], [math.log(0.1)], rtol=1e-6)
    assert out[features.ITEM_IS_TAIL].tolist() == [1]


def test_catalog_examples_transform_without_interaction_features(analyzed):
    out = _transform(analyzed["dir"], _rows()[:2], keys=ITEM_ONLY)
    assert features.USER_INDEX not in out
    assert out[features.ITEM_INDEX].tolist() == [0, 0]
    assert out[features.INPUT_IDS][0, :6].tolist() == [101, OFFICE, STAPLER, PLURAL_S, 100, 102]


def test_vocabulary_travels_with_relocated_graph_and_serving_model(analyzed, tmp_path):
    moved = str(tmp_path / "moved_transform")
    shutil.copytree(analyzed["dir"], moved)
    # Hide the BERT vocab.txt given in custom_config and the original graph (restored for other tests).
    hidden = [(str(analyzed["vocab"]), str(tmp_path / "vocab.hidden")),
              (analyzed["dir"], str(tmp_path / "original_transform"))]
    for src, dst in hidden:
        shutil.move(src, dst)
    try:
        assert _transform(moved, _rows()[:1])[features.INPUT_IDS][0, 1] == OFFICE
        _check_serving_model_copy(moved, tmp_path)
    finally:
        for src, dst in hidden:
            shutil.move(dst, src)


def _check_serving_model_copy(transform_dir: str, tmp_path) -> None:
    """A SavedModel that embeds the TFT layer, copied elsewhere without the transform dir, still tokenizes."""
    module = tf.Module()
    module.tft_layer = tft.TFTransformOutput(transform_dir).transform_features_layer()
    module.tokens = tf.function(lambda raw: module.tft_layer(raw)[features.INPUT_IDS])
    raw = _raw_batch(_rows()[:1])
    module.tokens(raw)
    saved, copied = str(tmp_path / "served"), str(tmp_path / "served_copy")
    tf.saved_model.save(module, saved)
    shutil.copytree(saved, copied)
    shutil.rmtree(saved)
    shutil.rmtree(transform_dir)
    assert tf.saved_model.load(copied).tokens(raw).numpy()[0, :3].tolist() == [101, OFFICE, STAPLER]


# ------------------------------------------------------------------------------ graph-free helpers
def test_head_size_smallest_prefix_reaching_share():
    # Sorted counts 4, 3, 2, 1 of 10: prefix shares 40%, 70%, 90% -> 3 items reach 80%.
    assert preprocessing.head_size(tf.constant([1, 3, 4, 2], tf.int64), 0.8).numpy() == 3
    assert preprocessing.head_size(tf.constant([5, 5], tf.int64), 0.5).numpy() == 1  # exactly 50%
    assert preprocessing.head_size(tf.constant([5, 5], tf.int64), 0.51).numpy() == 2


def test_left_pad_keeps_newest():
    values = tf.ragged.constant([[1, 2, 3], [4], []], dtype=tf.int64)
    np.testing.assert_array_equal(preprocessing.left_pad(values, 2, tf.constant(-1, tf.int64)),
                                  [[2, 3], [-1, 4], [-1, -1]])


def test_scalar_accepts_dense_column_and_sparse():
    np.testing.assert_array_equal(preprocessing._scalar(tf.constant([[1.0], [2.0]]), 0.0), [1.0, 2.0])
    sparse = tf.SparseTensor([[1, 0]], [b"x"], [2, 1])
    np.testing.assert_array_equal(preprocessing._scalar(sparse, ""), [b"", b"x"])


def test_position_bucket_without_the_raw_feature_or_with_a_dense_one():
    # A raw spec from before the service's logs has no `position`: every example reads as not logged.
    no_position = {features.ITEM_ID: tf.constant([[b"a"], [b"b"]])}
    np.testing.assert_array_equal(preprocessing.position_bucket(no_position), [0, 0])
    dense = {features.SLOT: tf.constant([[0], [LAST + 1], [-2]], tf.int64)}
    np.testing.assert_array_equal(preprocessing.position_bucket(dense), [1, LAST, 0])  # negative: invalid


def test_special_token_ids(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    assert preprocessing.special_token_ids(str(path)) == (101, 102)
