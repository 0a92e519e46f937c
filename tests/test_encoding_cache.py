"""trainer.encoding_cache over a tiny BERT: hits and misses, byte-identical vectors, keys, damaged shards."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_bert import write_tiny_bert
from trainer import bert
from trainer.encoding_cache import KEYS, SHARD_SUFFIX, VECTORS, EncodingCache, text_keys, weights_digest

TOKENS = 8  # short rows keep these tests fast
BATCH = 16
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny"), bert.fetch_minilm() / bert.VOCAB_FILE)


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return bert.BertTextEncoder(bert.load_bert(str(tiny_dir)))


class CountingEncoder:
    """bert.encode_in_batches over the tiny BERT (what the trainer passes), counting the rows of each call."""

    def __init__(self, encoder: bert.BertTextEncoder):
        self.encoder = encoder
        self.calls: list[int] = []
        self.outputs: list[np.ndarray] = []

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls.append(len(ids))
        self.outputs.append(bert.encode_in_batches(self.encoder, ids, mask, batch_size=BATCH))
        return self.outputs[-1]


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n distinct [CLS] wordpieces [SEP] rows of random lengths, 0-padded to TOKENS."""
    rng = np.random.default_rng(0)
    ids, mask = np.zeros((n, TOKENS), np.int64), np.zeros((n, TOKENS), np.int64)
    for i, length in enumerate(rng.integers(1, TOKENS - 1, n)):
        ids[i, : length + 2] = [CLS, *rng.integers(1000, 30000, length), SEP]
        mask[i, : length + 2] = 1
    assert len(np.unique(ids, axis=0)) == n
    return ids, mask


def _wider(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same rows padded to twice the width."""
    return tuple(np.pad(x, ((0, 0), (0, TOKENS))) for x in (ids, mask))


def _shards(cache: EncodingCache) -> list[str]:
    return sorted(tf.io.gfile.glob(f"{cache.directory}/*{SHARD_SUFFIX}"))


def test_a_second_run_encodes_only_the_new_rows_and_matches_an_uncached_run(encoder, tmp_path, caplog):
    ids, mask = _rows(200)
    old = np.arange(198)  # 1% of the catalog is new in the second run
    digest = weights_digest(encoder)
    first_run = CountingEncoder(encoder)
    EncodingCache(str(tmp_path), digest, TOKENS).encode(ids[old], mask[old], first_run)
    assert first_run.calls == [198]

    order = np.random.default_rng(1).permutation(200)  # the new rows land amid the old ones
    second_run = CountingEncoder(encoder)
    cache = EncodingCache(str(tmp_path), digest, TOKENS)
    with caplog.at_level(logging.INFO, logger="absl"):
        cached = cache.encode(ids[order], mask[order], second_run)
    assert second_run.calls == [2]
    assert "200 items (200 distinct texts): 198 from the cache, 2 encoded" in caplog.text
    uncached = bert.encode_in_batches(encoder, ids[order], mask[order], batch_size=BATCH)
    assert cached.dtype == np.float32 and cached.shape == (200, encoder.hidden_size)
    # the bytes each row was encoded to, in whichever run encoded it (the cache orders the rows it encodes)
    encoded = {row.tobytes() for run in (first_run, second_run) for row in run.outputs[0]}
    assert len(encoded) == 200 and all(row.tobytes() in encoded for row in cached)
    # an uncached run: the same vectors, up to the last bit some CPUs' kernels vary with a batch's other rows
    np.testing.assert_allclose(cached, uncached, rtol=0, atol=1e-6)
    assert len(_shards(cache)) == 2

    third_run = CountingEncoder(encoder)
    assert np.array_equal(cache.encode(ids[order], mask[order], third_run), cached)
    assert third_run.calls == [] and len(_shards(cache)) == 2  # nothing new, no call, no shard


def test_duplicates_are_encoded_once(encoder, tmp_path):
    ids, mask = _rows(3)
    twice = [0, 1, 0, 2, 1, 1]
    count = CountingEncoder(encoder)
    vectors = EncodingCache(str(tmp_path), weights_digest(encoder), TOKENS).encode(
        ids[twice], mask[twice], count
    )
    assert count.calls == [3]
    assert np.array_equal(vectors, CountingEncoder(encoder)(ids[twice], mask[twice]))


def test_keys_hash_the_ids_under_the_mask_only():
    ids, mask = _rows(2)
    outside = ids.copy()
    outside[mask == 0] = 7  # ids the mask hides do not reach BERT's mean either
    assert np.array_equal(text_keys(ids, mask), text_keys(outside, mask))
    assert np.array_equal(text_keys(ids, mask), text_keys(ids.astype(np.int32), mask))
    assert np.array_equal(text_keys(ids, mask), text_keys(*_wider(ids, mask)))  # the folder says T
    keys = text_keys(ids, mask)
    assert keys[0] != keys[1] and len(keys[0]) == 64


def test_no_sharing_across_weights_or_max_tokens(encoder, tmp_path):
    ids, mask = _rows(4)
    digest = weights_digest(encoder)
    EncodingCache(str(tmp_path), digest, TOKENS).encode(ids, mask, CountingEncoder(encoder))

    other_bert = CountingEncoder(encoder)
    EncodingCache(str(tmp_path), "f" * 64, TOKENS).encode(ids, mask, other_bert)
    wider = CountingEncoder(encoder)
    wide_ids, wide_mask = _wider(ids, mask)  # the same texts (keys) padded to 16
    EncodingCache(str(tmp_path), digest, 2 * TOKENS).encode(wide_ids, wide_mask, wider)
    assert other_bert.calls == [4] and wider.calls == [4]
    with pytest.raises(ValueError, match=r"shape \[N, 8\]"):
        EncodingCache(str(tmp_path), digest, TOKENS).encode(wide_ids, wide_mask, wider)


def test_weights_digest_follows_the_weights_not_the_model_name(encoder, tiny_dir, tmp_path):
    again = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)))  # named tf_bert_model_<n>
    assert again.bert.name != encoder.bert.name
    assert weights_digest(again) == weights_digest(encoder)
    other = write_tiny_bert(tmp_path / "other", tiny_dir / bert.VOCAB_FILE, seed=1)
    assert weights_digest(bert.BertTextEncoder(bert.load_bert(str(other)))) != weights_digest(encoder)
    bias = again.bert.bert.encoder.layer[1].bert_output.dense.bias  # a fine-tuned top layer
    bias.assign(bias + 1e-6)
    assert weights_digest(again) != weights_digest(encoder)


def _truncated(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"not a shard")


def _foreign_arrays(path):
    with open(path, "wb") as f:
        np.savez(f, **{KEYS: np.zeros(2, "S64"), VECTORS: np.zeros((3, 4), np.float32)})  # 2 keys, 3 rows


@pytest.mark.parametrize("damage", [_truncated, _garbage, _foreign_arrays])
def test_a_damaged_shard_is_ignored_with_a_warning(encoder, tmp_path, caplog, damage):
    ids, mask = _rows(3)
    cache = EncodingCache(str(tmp_path), weights_digest(encoder), TOKENS)
    before = cache.encode(ids[:2], mask[:2], CountingEncoder(encoder))
    (shard,) = _shards(cache)
    damage(shard)
    with open(f"{cache.directory}/unfinished{SHARD_SUFFIX}.partial", "wb") as f:
        f.write(b"a writer that died: never read")

    count = CountingEncoder(encoder)
    with caplog.at_level(logging.WARNING, logger="absl"):
        vectors = cache.encode(ids, mask, count)
    assert count.calls == [3]  # the damaged shard's items are encoded again
    assert np.array_equal(vectors[:2], before)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and shard in warnings[0]


def test_empty_input(encoder, tmp_path):
    ids, mask = _rows(0)
    cache = EncodingCache(str(tmp_path), weights_digest(encoder), TOKENS)
    vectors = cache.encode(ids, mask, CountingEncoder(encoder))
    assert vectors.shape == (0, encoder.hidden_size) and vectors.dtype == np.float32
    assert _shards(cache) == []
