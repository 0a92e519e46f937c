"""TFX Transform `preprocessing_fn`: vocabularies, item popularity, WordPiece tokens, scaled price.

Every vocabulary is computed on the analyzed split (train). The item vocabulary counts *positive*
interactions only (sampled negatives would distort popularity) and is written with its counts ("count id"
per line, most popular first), from which ITEM_LOG_PROB and ITEM_IS_TAIL are derived in-graph. Item ids
must not contain spaces (the space separates count and id in that file).

Item outputs (ITEM_INDEX, ITEM_LOG_PROB, ITEM_IS_TAIL, INPUT_IDS/MASK, BRAND_INDEX, CATEGORY_INDEX,
PRICE_Z, ITEM_ID) depend on item features only, so catalog examples can be transformed on their own. Train
examples carry no TEXT (their INPUT_IDS are [CLS] [SEP]; `features.EXAMPLE_ITEM_FEATURES`): the tokenizer
runs on the catalog's and the eval split's text, and stays in the transform graph for serving.
POSITION_BUCKET is 0 for every example without a POSITION (dataset and catalog examples, serving requests).
"""

import contextlib
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_text as tf_text
import tensorflow_transform as tft

from trainer import features

# custom_config keys read by preprocessing_fn.
BERT_VOCAB = features.BERT_VOCAB_CONFIG  # path of the WordPiece vocab.txt (becomes a transform graph asset)

_OOV_BUCKETS = 1
_CLS, _SEP = "[CLS]", "[SEP]"

Tensor = tf.Tensor | tf.SparseTensor | tf.RaggedTensor


# TFX Transform will call this function.
def preprocessing_fn(inputs: Mapping[str, Tensor], custom_config: Mapping[str, Any] | None = None) -> dict:
    """Raw features (see `trainer.features`) -> transformed features, all with batch dimension B."""
    if not custom_config or BERT_VOCAB not in custom_config:
        raise ValueError(f"preprocessing_fn needs custom_config[{BERT_VOCAB!r}], the BERT vocab.txt path")
    outputs = {features.LABEL: tf.cast(_scalar(inputs[features.LABEL], 0.0), tf.float32)}
    outputs.update(_user_features(inputs))
    outputs.update(_item_features(inputs))
    outputs.update(_text_features(_scalar(inputs[features.TEXT], ""), custom_config[BERT_VOCAB]))
    outputs.update(_attribute_features(inputs))
    outputs[features.POSITION_BUCKET] = position_bucket(inputs)
    return outputs


# ----------------------------------------------------------------------------------------- shapes
def _scalar(x: Tensor, default: Any) -> tf.Tensor:
    """One value per example ([B], [B, 1], sparse or ragged) -> dense [B]; a missing value -> default."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=default)
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default)
    if x.shape.rank == 1:
        return x
    # Pad one column so that a batch with no value at all still has a first column.
    x = tf.pad(x, [[0, 0], [0, 1]], constant_values=default)
    return x[:, 0]


def _ragged(x: Tensor) -> tf.RaggedTensor:
    """A variable-length feature as [B, (n)]."""
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def left_pad(values: tf.RaggedTensor, length: int, pad: Any) -> tf.Tensor:
    """[B, (n)] -> [B, length]: each row's last `length` values, left-padded with `pad` (newest last)."""
    newest_first = tf.reverse(values, axis=[1]).to_tensor(default_value=pad, shape=[None, length])
    return tf.reverse(newest_first, axis=[1])


# ------------------------------------------------------------------------------------------ users
def _user_features(inputs: Mapping[str, Tensor]) -> dict:
    user_id = _scalar(inputs[features.USER_ID], "")
    index = tft.compute_and_apply_vocabulary(
        user_id, num_oov_buckets=_OOV_BUCKETS, vocab_filename=features.USER_VOCAB
    )
    return {features.USER_INDEX: index}


# ------------------------------------------------------------------------------------------ items
def _item_features(inputs: Mapping[str, Tensor]) -> dict:
    """Item and history indices over the positives-only item vocabulary, plus popularity features."""
    item_id = _scalar(inputs[features.ITEM_ID], "")
    history = _ragged(inputs[features.HISTORY])
    is_positive = tf.equal(tf.cast(_scalar(inputs[features.LABEL], 0.0), tf.float32), 1.0)
    vocab = tft.vocabulary(
        tf.boolean_mask(item_id, is_positive), vocab_filename=features.ITEM_VOCAB, store_frequency=True
    )
    total = tft.sum(tf.cast(is_positive, tf.int64))  # positive train interactions
    index = _apply_item_vocabulary(item_id, vocab, _lookup_index)
    history_index = _apply_item_vocabulary(history, vocab, _lookup_index)
    head = _apply_item_vocabulary(item_id, vocab, _lookup_head_size)
    return {
        features.ITEM_ID: item_id,
        features.HISTORY: left_pad(history, features.HISTORY_LENGTH, ""),
        features.ITEM_INDEX: index,
        features.HISTORY_INDEX: left_pad(history_index, features.HISTORY_LENGTH, tf.constant(-1, tf.int64)),
        features.ITEM_LOG_PROB: item_log_prob(_apply_item_vocabulary(item_id, vocab, _lookup_count), total),
        features.ITEM_IS_TAIL: tf.cast(index >= head, tf.int64),  # OOV (index = vocab size) is tail
    }


def _apply_item_vocabulary(ids: Tensor, vocab: tf.Tensor, lookup_fn) -> Tensor:
    # num_oov_buckets only sets the schema's int domain here; lookup_fn builds the table.
    return tft.apply_vocabulary(ids, vocab, lookup_fn=lookup_fn, num_oov_buckets=_OOV_BUCKETS)


def item_log_prob(count: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
    """log(count / total) [B] float32; unseen items (count 0) count as 1."""
    count = tf.cast(tf.maximum(count, 1), tf.float32)
    return tf.math.log(count / tf.cast(tf.maximum(total, 1), tf.float32))


def _frequency_table(vocab_path: tf.Tensor, value_index: int, default: int | None = None):
    """A table over the "count id" lines of a `store_frequency` vocabulary, keyed by id.

    value_index: tf.lookup.TextFileIndex.LINE_NUMBER (vocabulary index; OOV -> the one OOV bucket) or 0
    (count; unknown ids -> `default`). Built outside the traced function once the path is concrete, as TFT
    does for its own tables, so it is initialised once rather than on every call.
    """
    lift = contextlib.nullcontext() if tf.is_symbolic_tensor(vocab_path) else tf.init_scope()
    with lift:
        init = tf.lookup.TextFileInitializer(vocab_path, tf.string, 1, tf.int64, value_index, delimiter=" ")
        if default is None:
            return tf.lookup.StaticVocabularyTable(init, num_oov_buckets=_OOV_BUCKETS)
        return tf.lookup.StaticHashTable(init, default_value=default)


# `lookup_fn`s for tft.apply_vocabulary: (ids, vocabulary path) -> (result, table size).
def _lookup_index(ids: Tensor, vocab_path: tf.Tensor) -> tuple:
    table = _frequency_table(vocab_path, tf.lookup.TextFileIndex.LINE_NUMBER)
    if isinstance(ids, tf.RaggedTensor):
        return tf.ragged.map_flat_values(table.lookup, ids), table.size()
    return table.lookup(ids), table.size()


def _lookup_count(ids: tf.Tensor, vocab_path: tf.Tensor) -> tuple:
    table = _frequency_table(vocab_path, 0, default=0)
    return table.lookup(ids), table.size()


def _lookup_head_size(ids: tf.Tensor, vocab_path: tf.Tensor) -> tuple:
    """The head size (see `head_size`) broadcast to the shape of `ids`."""
    table = _frequency_table(vocab_path, 0, default=0)
    _, counts = table.export()
    return tf.fill(tf.shape(ids), head_size(counts, features.HEAD_SHARE)), table.size()


def head_size(counts: tf.Tensor, share: float) -> tf.Tensor:
    """Number of most popular items that together first reach `share` of all counts: [V] int -> int64.

    E.g. counts [4, 3, 2, 1], share 0.8 -> 3 (4 + 3 = 70% < 80%, 4 + 3 + 2 = 90%). Items rank by count in
    vocabulary order, so vocabulary indices below the head size are the head.
    """
    counts = tf.sort(tf.cast(counts, tf.float64), direction="DESCENDING")
    before = tf.cumsum(counts, exclusive=True)
    return tf.reduce_sum(tf.cast(before < share * tf.reduce_sum(counts), tf.int64))


# ------------------------------------------------------------------------------------------- text
def _text_features(text: tf.Tensor, vocab_path: str) -> dict:
    """[B] strings -> INPUT_IDS, INPUT_MASK int64 [B, MAX_TOKENS]."""
    # Tracked by TFT, so the tokenizer's vocab.txt becomes an asset of the transform graph.
    tokenizer = tft.make_and_track_object(lambda: bert_tokenizer(vocab_path), name="bert_tokenizer")
    ids, mask = tokenize(tokenizer, text, *special_token_ids(vocab_path))
    return {features.INPUT_IDS: ids, features.INPUT_MASK: mask}


def bert_tokenizer(vocab_path: str) -> tf_text.BertTokenizer:
    """The uncased WordPiece tokenizer (lower-cases and strips accents, like MiniLM's own)."""
    return tf_text.BertTokenizer(vocab_path, lower_case=True, token_out_type=tf.int64)


def tokenize(
    tokenizer: tf_text.BertTokenizer,
    text: tf.Tensor,
    cls_id: int,
    sep_id: int,
    max_tokens: int = features.MAX_TOKENS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """[B] strings -> ([CLS] wordpieces [SEP] ids, mask), both int64 [B, max_tokens].

    Wordpieces are cut to max_tokens - 2 so that [SEP] always fits; padding is id 0 with mask 0.
    """
    pieces = tokenizer.tokenize(text).merge_dims(-2, -1)[:, : max_tokens - 2]
    ids, _ = tf_text.combine_segments([pieces], cls_id, sep_id)
    ids, mask = tf_text.pad_model_inputs(ids, max_tokens)
    return ids, tf.cast(mask, tf.int64)


def special_token_ids(vocab_path: str) -> tuple[int, int]:
    """Line numbers of [CLS] and [SEP] in a WordPiece vocab.txt (101 and 102 for BERT uncased)."""
    with tf.io.gfile.GFile(vocab_path) as f:
        lines = [line.rstrip("\n") for line in f]
    missing = [t for t in (_CLS, _SEP) if t not in lines]
    if missing:
        raise ValueError(f"{vocab_path} lacks {missing}")
    return lines.index(_CLS), lines.index(_SEP)


# --------------------------------------------------------------------------------------- position
def position_bucket(inputs: Mapping[str, Tensor]) -> tf.Tensor:
    """POSITION_BUCKET int64 [B]: 0 where the example has no POSITION, else 1 + min(slot, MAX_POSITION - 1).

    A raw spec without POSITION at all (a schema or transform graph from before the service's logs) reads as
    every example lacking it. Negative slots (invalid; the schema's int domain flags them) count as absent.
    """
    if features.SLOT in inputs:
        slot = tf.cast(_scalar(inputs[features.SLOT], -1), tf.int64)
    else:
        slot = tf.fill(tf.shape(_scalar(inputs[features.ITEM_ID], "")), tf.constant(-1, tf.int64))
    bucket = 1 + tf.minimum(slot, features.MAX_POSITION - 1)
    return tf.where(slot >= 0, bucket, tf.zeros_like(bucket))


# ------------------------------------------------------------------------------------- attributes
def _attribute_features(inputs: Mapping[str, Tensor]) -> dict:
    """Brand and category indices (1 OOV bucket; categories -1-padded) and the price z-score."""
    brand = tft.compute_and_apply_vocabulary(
        _scalar(inputs[features.BRAND], ""), num_oov_buckets=_OOV_BUCKETS, vocab_filename=features.BRAND_VOCAB
    )
    categories = tft.compute_and_apply_vocabulary(
        _ragged(inputs[features.CATEGORIES]),
        num_oov_buckets=_OOV_BUCKETS,
        vocab_filename=features.CATEGORY_VOCAB,
    )
    price = tf.maximum(tf.cast(_scalar(inputs[features.PRICE], 0.0), tf.float32), 0.0)
    return {
        features.BRAND_INDEX: brand,
        features.CATEGORY_INDEX: categories.to_tensor(-1, shape=[None, features.MAX_CATEGORIES]),
        features.PRICE_Z: tft.scale_to_z_score(tf.math.log1p(price)),
    }
