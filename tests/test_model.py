"""Unit tests of trainer.model on constructed transformed features (no transform graph, no BERT)."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import features
from trainer.config import HISTORY_POOLINGS, TrainerConfig
from trainer.model import (
    HistoryAttention,
    IdEmbedding,
    PositionPooling,
    SampledNegatives,
    TailTowerModel,
    TextVectorCache,
    VocabSizes,
    masked_mean,
    retrieval_loss,
)

H = features.HISTORY_LENGTH
T = features.MAX_TOKENS
TEXT_DIM = 8
SIZES = VocabSizes(users=4, items=6, brands=3, categories=5)
CATALOG = np.array([b"i0", b"i1", b"i2", b"i3", b"i4", b"i5"], dtype=object)


class FakeEncoder(tf.keras.layers.Layer):
    """Stands in for BertTextEncoder: masked mean of token embeddings, {ids, mask} [B, T] → [B, TEXT_DIM]."""

    def __init__(self):
        super().__init__()
        self.embedding = tf.keras.layers.Embedding(50, TEXT_DIM)

    def call(self, tokens):
        mask = tokens[features.INPUT_MASK] > 0
        return masked_mean(self.embedding(tokens[features.INPUT_IDS]), mask)


def _tokens(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1, 50, size=[batch, T])
    mask = np.zeros([batch, T], np.int64)
    mask[:, :5] = 1
    return {features.INPUT_IDS: ids * mask, features.INPUT_MASK: mask}


def _batch(users, items, histories, labels, position_buckets=None) -> dict[str, tf.Tensor]:
    """Transformed features for rows (user index, item index, history item indices, label), with
    POSITION_BUCKET when `position_buckets` is given."""
    batch = len(users)
    history_index = np.full([batch, H], -1, np.int64)
    history = np.full([batch, H], b"", dtype=object)
    for row, items_seen in enumerate(histories):
        if items_seen:  # left-padded, as the transform writes it
            history_index[row, -len(items_seen) :] = items_seen
            history[row, -len(items_seen) :] = [CATALOG[i] for i in items_seen]
    categories = np.full([batch, features.MAX_CATEGORIES], -1, np.int64)
    categories[:, 0] = np.asarray(items) % SIZES.categories
    counts = np.array([6.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    log_prob = np.log(counts / counts.sum())
    values = {
        features.USER_INDEX: np.asarray(users, np.int64),
        features.ITEM_INDEX: np.asarray(items, np.int64),
        features.ITEM_ID: CATALOG[np.asarray(items)],
        features.HISTORY_INDEX: history_index,
        features.HISTORY: history,
        features.BRAND_INDEX: np.asarray(items, np.int64) % SIZES.brands,
        features.CATEGORY_INDEX: categories,
        features.PRICE_Z: np.linspace(-1, 1, batch).astype(np.float32),
        features.ITEM_LOG_PROB: log_prob[np.asarray(items)].astype(np.float32),
        features.ITEM_IS_TAIL: (np.asarray(items) > 1).astype(np.int64),
        features.LABEL: np.asarray(labels, np.float32),
        **_tokens(batch),
    }
    if position_buckets is not None:
        values[features.POSITION_BUCKET] = np.asarray(position_buckets, np.int64)
    return {key: tf.constant(value) for key, value in values.items()}


def _catalog() -> dict[str, np.ndarray]:
    """Transformed catalog features of the 6 items (row i = item i), as train.load_catalog returns them."""
    batch = _batch([0] * len(CATALOG), list(range(len(CATALOG))), [[]] * len(CATALOG), [1] * len(CATALOG))
    return {key: value.numpy() for key, value in batch.items()}


def _model(**config) -> TailTowerModel:
    tf.keras.utils.set_random_seed(0)
    vectors = np.random.default_rng(1).normal(size=[len(CATALOG), TEXT_DIM]).astype(np.float32)
    cache = TextVectorCache(CATALOG, vectors)
    return TailTowerModel(TrainerConfig(embedding_dim=16, **config), SIZES, cache, catalog=_catalog())


# User u likes item u (and item u+2 sometimes); user 3 is unknown to nobody, OOV user is index 4.
USERS = [0, 1, 2, 3, 0, 1, 2, 3]
ITEMS = [0, 1, 2, 3, 2, 3, 0, 1]
HISTORIES = [[1, 2], [], [0], [5, 4, 3], [1], [2, 0], [], [3]]
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]


def test_id_embedding_zeroes_oov_and_padding():
    layer = IdEmbedding(vocab_size=3, dim=4)
    out = layer(tf.constant([[0, 2, 3, -1]], tf.int64)).numpy()
    assert out.shape == (1, 4, 4)
    assert np.abs(out[0, :2]).sum() > 0
    np.testing.assert_array_equal(out[0, 2:], 0.0)


def test_masked_mean():
    values = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = tf.constant([[True, True, False], [False, False, False]])
    # row 0: mean of the first two; row 1: nothing to average → zeros.
    np.testing.assert_allclose(masked_mean(values, mask).numpy(), [[2.0, 3.0], [0.0, 0.0]])
    # BERT's 0/1 int attention mask (trainer.bert pools with this function too) gives the same.
    int_mask = tf.cast(mask, tf.int32)
    np.testing.assert_allclose(masked_mean(values, int_mask).numpy(), [[2.0, 3.0], [0.0, 0.0]])


def test_position_pooling_starts_as_the_mean_and_weights_slots():
    values = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = tf.constant([[True, True, False], [False, False, False]])
    pooling = PositionPooling(length=3)
    np.testing.assert_allclose(pooling(values, mask).numpy(), masked_mean(values, mask).numpy())
    # Newest slot (index 1 here) weighted e^2 against e^0: (1·1 + 3·e²) / (1 + e²); masked slot 2 ignored
    # however large its logit; the empty row stays zero.
    pooling.position_logits.assign([0.0, 2.0, 50.0])
    w = math.exp(2.0)
    expected = [[(1 + 3 * w) / (1 + w), (2 + 4 * w) / (1 + w)], [0.0, 0.0]]
    np.testing.assert_allclose(pooling(values, mask).numpy(), expected, rtol=1e-5)


def test_position_pooling_in_the_query_tower_learns():
    model = _model(user_embedding=False, history_pooling="position")
    pooling = model.query_tower.position_pooling
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    model.compile(tf.keras.optimizers.Adam(0.05))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(5), verbose=0)
    logits = pooling.position_logits.numpy()
    assert logits.shape == (H,)
    assert np.abs(logits[-3:]).max() > 0  # slots holding history moved
    np.testing.assert_array_equal(logits[:-3], 0.0)  # always-padding slots get no gradient
    assert _model(history_pooling="mean").query_tower.position_pooling is None
    assert _model(history_pooling="attention").query_tower.position_pooling is None


def _layer_norm(x: np.ndarray, layer: tf.keras.layers.LayerNormalization) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()


def _numpy_history_attention(layer: HistoryAttention, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: per block, x = LN(x + MHA(x)), x = LN(x + FFN(x)); query slot i attends to unmasked
    key slots j <= i and to itself; the newest slot's output, zeros for an empty row."""
    length = values.shape[1]
    slots = np.arange(length)
    allowed = (slots[None, :] <= slots[:, None]) & (
        mask[:, None, :] | np.eye(length, dtype=bool)
    )  # [B, i, j]
    x = values + layer.position_embedding.numpy()
    for block in layer.blocks:
        w = {"/".join(v.name.split("/")[-2:]): v.numpy() for v in block.attention.weights}
        q, k, v = (
            np.einsum("bld,dhk->blhk", x, w[f"{name}/kernel:0"]) + w[f"{name}/bias:0"]
            for name in ("query", "key", "value")
        )
        scores = np.einsum("bihk,bjhk->bhij", q, k) / np.sqrt(q.shape[-1])
        scores = np.where(allowed[:, None], scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        heads = np.einsum("bhij,bjhk->bihk", probs, v)
        attended = np.einsum("bihk,hkd->bid", heads, w["attention_output/kernel:0"])
        x = _layer_norm(x + attended + w["attention_output/bias:0"], block.attention_norm)
        hidden, out = block.feed_forward.layers
        relu = np.maximum(x @ hidden.kernel.numpy() + hidden.bias.numpy(), 0.0)
        x = _layer_norm(x + relu @ out.kernel.numpy() + out.bias.numpy(), block.feed_forward_norm)
    return x[:, -1] * mask[:, -1:]


# Left-padded rows of 2 and 4 items, a row with an interior masked slot, and an empty row.
ATTENTION_MASK = np.array(
    [[False, False, True, True], [True, True, True, True], [False, True, False, True], [False] * 4]
)


def _attention_layer(blocks: int = 2) -> tuple[HistoryAttention, np.ndarray]:
    tf.keras.utils.set_random_seed(0)
    layer = HistoryAttention(length=4, dim=8, heads=2, blocks=blocks, dropout=0.2)
    values = np.random.default_rng(2).normal(size=[len(ATTENTION_MASK), 4, 8]).astype(np.float32)
    return layer, values


def test_history_attention_matches_numpy():
    layer, values = _attention_layer()
    out = layer(tf.constant(values), tf.constant(ATTENTION_MASK)).numpy()
    assert out.shape == (4, 8)
    np.testing.assert_allclose(out, _numpy_history_attention(layer, values, ATTENTION_MASK), atol=1e-5)
    np.testing.assert_array_equal(out[3], 0.0)  # empty history: zeros, not NaN
    assert np.abs(out[:3]).min(axis=1).max() > 0


def test_history_attention_masks_padding_and_reads_the_ordered_history():
    layer, values = _attention_layer()
    mask = tf.constant(ATTENTION_MASK)
    out = layer(tf.constant(values), mask).numpy()
    # Masked slots (left padding, the interior one of row 2, the empty row) may hold anything.
    noisy = np.where(ATTENTION_MASK[..., None], values, 1e3 * np.sign(values)).astype(np.float32)
    np.testing.assert_allclose(layer(tf.constant(noisy), mask).numpy(), out, atol=1e-5)
    # Causal: changing slot 2 leaves slots 0-1's outputs as they are, and changes slots 2-3's.
    changed = values.copy()
    changed[:, 2] += 1.0
    before = layer.sequence(tf.constant(values), mask).numpy()
    after = layer.sequence(tf.constant(changed), mask).numpy()
    np.testing.assert_allclose(after[:2, :2], before[:2, :2], atol=1e-6)
    assert (np.abs(after[:2, 2:] - before[:2, 2:]).max(axis=-1) > 1e-3).all()
    # Order matters: the same items with the two older ones swapped read out differently.
    swapped = values.copy()
    swapped[1, [0, 1]] = values[1, [1, 0]]
    assert np.abs(layer(tf.constant(swapped), mask).numpy()[1] - out[1]).max() > 1e-3
    # Dropout only while training.
    np.testing.assert_array_equal(layer(tf.constant(values), mask, training=False).numpy(), out)
    trained = layer(tf.constant(values), mask, training=True).numpy()
    assert np.isfinite(trained).all() and np.abs(trained[:3] - out[:3]).max() > 1e-3
    np.testing.assert_array_equal(trained[3], 0.0)


def test_history_attention_needs_heads_dividing_dim():
    with pytest.raises(ValueError, match="heads"):
        HistoryAttention(length=4, dim=8, heads=3, blocks=1, dropout=0.1)


def test_attention_query_depends_on_history_order():
    histories = [[1, 2], [2, 1], []]
    batch = _batch([0, 0, 0], [0, 0, 0], histories, [1, 1, 1])
    query = _model(user_embedding=False, history_pooling="attention").query_embedding(batch).numpy()
    assert np.abs(query[0] - query[1]).max() > 1e-3
    np.testing.assert_array_equal(
        query[2], 0.0
    )  # empty history pools to zeros; the untrained Dense bias is 0
    mean = _model(user_embedding=False, history_pooling="mean").query_embedding(batch).numpy()
    np.testing.assert_allclose(mean[0], mean[1], rtol=1e-6)


@pytest.mark.parametrize("mixed", [False, True])
def test_attention_query_tower_saved_model_round_trip(tmp_path, mixed):
    from trainer.train import precision_policy

    with precision_policy(mixed):
        model = _model(user_embedding=False, history_pooling="attention")
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    keys = (features.USER_INDEX, features.HISTORY_INDEX, features.HISTORY)
    spec = {key: tf.TensorSpec([None, *batch[key].shape[1:]], batch[key].dtype) for key in keys}
    module = tf.Module()
    module.model = model
    module.query = tf.function(model.query_embedding, input_signature=[spec])
    expected = model.query_embedding(batch).numpy()
    tf.saved_model.save(module, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    got = loaded.query({key: batch[key] for key in keys}).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3 if mixed else 1e-6)
    first = {key: batch[key][:1] for key in keys}  # another batch size than any seen before saving
    np.testing.assert_allclose(loaded.query(first).numpy(), expected[:1], atol=1e-3 if mixed else 1e-6)
    assert np.abs(expected).max() > 0.1


def test_text_cache_hits_misses_and_fallback():
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2) + 1.0
    encoder = FakeEncoder()
    tokens = _tokens(2)
    encoder(tokens)  # built before it runs inside tf.cond
    cache = TextVectorCache(
        np.array([b"a", b"b", b"c"], dtype=object), np.pad(vectors, [(0, 0), (0, 6)]), fallback=encoder
    )
    ids = tf.constant([b"c", b"cold"])
    no_tokens = cache(ids).numpy()
    np.testing.assert_allclose(no_tokens[0, :2], [5.0, 6.0])
    np.testing.assert_array_equal(no_tokens[1], 0.0)
    with_tokens = cache(ids, tokens).numpy()
    np.testing.assert_allclose(with_tokens[0, :2], [5.0, 6.0])  # hit: cache, not the encoder
    np.testing.assert_allclose(with_tokens[1], encoder(tokens).numpy()[1], rtol=1e-6)


def test_text_cache_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="unique"):
        TextVectorCache(np.array([b"a", b"a"], dtype=object), np.zeros([2, 2], np.float32))


def test_tower_shapes_and_oov_inputs():
    model = _model()
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    query = model.query_embedding(batch)
    candidate = model.candidate_embedding(batch)
    assert query.shape == (8, 16) and candidate.shape == (8, 16)
    assert model(batch).shape == (8,)
    # Unknown user (OOV index 4), empty history, cold item (OOV index 6, id absent from the cache).
    cold = _batch([SIZES.users], [0], [[]], [1])
    cold[features.ITEM_INDEX] = tf.constant([SIZES.items], tf.int64)
    cold[features.ITEM_ID] = tf.constant([b"cold"])
    assert np.isfinite(model.query_embedding(cold).numpy()).all()
    assert np.isfinite(model.candidate_embedding(cold).numpy()).all()


def test_logq_correction_lowers_popular_logits():
    # All scores 0; two positive rows, candidate A with p=0.9, B with p=0.1. Corrected logits
    # s - log p = [-log .9, -log .1]: row A loss = log(1 + 0.9/0.1) = log 10, row B = log(1 + 0.1/0.9)
    # = log(10/9); mean = (log 10 + log 10/9) / 2. Without correction each row is log 2.
    task = tfrs.tasks.Retrieval(remove_accidental_hits=True)
    zeros = tf.zeros([2, 3])
    log_prob = tf.math.log(tf.constant([0.9, 0.1]))
    ids = tf.constant([b"A", b"B"])
    labels = tf.constant([1.0, 1.0])
    corrected = retrieval_loss(task, zeros, zeros, labels, log_prob, ids, beta=1.0)
    np.testing.assert_allclose(corrected.numpy(), (math.log(10) + math.log(10 / 9)) / 2, rtol=1e-5)
    only_a = retrieval_loss(task, zeros, zeros, tf.constant([1.0, 0.0]), log_prob, ids, beta=1.0)
    assert only_a.numpy() == pytest.approx(0.0, abs=1e-6)  # B is a negative row: not a candidate for A
    uncorrected = retrieval_loss(task, zeros, zeros, labels, log_prob, ids, beta=0.0)
    np.testing.assert_allclose(uncorrected.numpy(), math.log(2), rtol=1e-5)
    # Half strength: p^0.5 = [0.949, 0.316]; row A loss = log(1 + 3) = log 4, row B = log(4/3).
    half = retrieval_loss(task, zeros, zeros, labels, log_prob, ids, beta=0.5)
    np.testing.assert_allclose(half.numpy(), (math.log(4) + math.log(4 / 3)) / 2, rtol=1e-5)


def test_accidental_hits_removed():
    # Rows 0 and 1 share item "A": for row 0 the column of row 1 is the same item, not a negative.
    # Scores all 0, no correction → row loss = log(#valid columns):
    # rows 0, 1: log 2 (self + "B"), row 2: log 3.
    task = tfrs.tasks.Retrieval(remove_accidental_hits=True)
    zeros = tf.zeros([3, 2])
    loss = retrieval_loss(
        task, zeros, zeros, tf.ones([3]), tf.zeros([3]), tf.constant([b"A", b"A", b"B"]), beta=0.0
    )
    np.testing.assert_allclose(loss.numpy(), (2 * math.log(2) + math.log(3)) / 3, rtol=1e-5)


def _numpy_retrieval_loss(query, candidate, labels, log_prob, ids, beta):
    """Reference: row i's softmax over columns j (positives and every appended negative), logit
    q_i·c_j - beta·log p_j (p clipped to [1e-6, 1] as TFRS does), accidental hits (same id, j != i) and
    label-0 in-batch columns removed; mean of -log softmax_ii over the positive rows."""
    batch = len(labels)
    logits = query @ candidate.T - np.log(np.clip(np.exp(beta * log_prob), 1e-6, 1.0))[np.newaxis, :]
    losses = []
    for i in np.flatnonzero(labels > 0.5):
        eligible = [j >= batch or labels[j] > 0.5 for j in range(len(ids))]
        keep = [j for j in range(len(ids)) if j == i or (ids[j] != ids[i] and eligible[j])]
        row = logits[i, keep]
        losses.append(np.log(np.exp(row - row.max()).sum()) + row.max() - logits[i, i])
    return float(np.mean(losses))


def test_mixed_negatives_loss_matches_numpy():
    rng = np.random.default_rng(3)
    query, candidate = rng.normal(size=[4, 3]), rng.normal(size=[4, 3])
    extra = rng.normal(size=[3, 3])
    labels = np.array([1.0, 1.0, 0.0, 1.0])
    ids = np.array([b"A", b"B", b"C", b"A"], dtype=object)
    extra_ids = np.array([b"B", b"D", b"E"], dtype=object)  # "B" is an accidental hit for row 1
    log_prob = np.log([0.5, 0.2, 0.1, 0.5])
    extra_log_prob = np.full(3, np.log(1 / 6))  # uniform over a catalog of 6
    task = tfrs.tasks.Retrieval(remove_accidental_hits=True)
    for beta in (0.0, 0.5, 1.0):
        negatives = SampledNegatives(
            tf.constant(extra, tf.float32), tf.constant(extra_log_prob, tf.float32), tf.constant(extra_ids)
        )
        got = retrieval_loss(
            task,
            tf.constant(query, tf.float32),
            tf.constant(candidate, tf.float32),
            tf.constant(labels, tf.float32),
            tf.constant(log_prob, tf.float32),
            tf.constant(ids),
            beta,
            negatives,
        )
        expected = _numpy_retrieval_loss(
            query,
            np.concatenate([candidate, extra]),
            labels,
            np.concatenate([log_prob, extra_log_prob]),
            np.concatenate([ids, extra_ids]),
            beta,
        )
        np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # Hand-checked special case: all scores 0, beta 0, one positive row, 2 extra negatives → log 3.
    zeros = tf.zeros([1, 2])
    two = SampledNegatives(tf.zeros([2, 2]), tf.zeros([2]), tf.constant([b"x", b"y"]))
    loss = retrieval_loss(task, zeros, zeros, tf.ones([1]), tf.zeros([1]), tf.constant([b"A"]), 0.0, two)
    np.testing.assert_allclose(float(loss), math.log(3), rtol=1e-6)


def test_model_uses_uniform_catalog_negatives():
    # temperature 0: plain dot products, as the numpy reference computes them
    model = _model(mixed_negatives=3, logq_beta=0.5, ranking_weight=0.0, temperature=0.0)
    rows = tf.constant([5, 0, 2], tf.int64)
    model.negative_sampler.sample_indices = lambda: rows  # fixed draw, so numpy can follow
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    loss = float(model.compute_loss(batch))
    extra = model.candidate_embedding(model.negative_sampler.features(rows)).numpy()
    expected = _numpy_retrieval_loss(
        model.query_embedding(batch).numpy(),
        np.concatenate([model.candidate_embedding(batch).numpy(), extra]),
        np.asarray(LABELS, np.float64),
        np.concatenate([batch[features.ITEM_LOG_PROB].numpy(), np.full(3, np.log(1 / len(CATALOG)))]),
        np.concatenate([CATALOG[ITEMS], CATALOG[[5, 0, 2]]]),
        0.5,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    # The rows' catalog features are those of items 5, 0, 2.
    np.testing.assert_array_equal(
        model.negative_sampler.features(rows)[features.ITEM_ID].numpy(), CATALOG[[5, 0, 2]]
    )
    draws = model.negative_sampler.__class__.sample_indices(model.negative_sampler).numpy()
    assert draws.shape == (3,) and ((draws >= 0) & (draws < len(CATALOG))).all()


def test_mixed_negatives_need_the_catalog():
    cache = TextVectorCache(CATALOG, np.zeros([len(CATALOG), TEXT_DIM], np.float32))
    with pytest.raises(ValueError, match="catalog"):
        TailTowerModel(TrainerConfig(mixed_negatives=2), SIZES, cache)


def _id_embedding_gradient(model: TailTowerModel, batch, training: bool) -> float:
    model.compute_loss(batch)  # builds the layers, so the variables exist
    variables = model.item_vectors.id_embedding.trainable_variables
    assert variables
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=training)
    grads = tape.gradient(loss, variables)
    return sum(float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) for g in grads if g is not None)


def test_id_dropout():
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    always = _model(id_dropout=1.0)
    assert _id_embedding_gradient(always, batch, training=True) == 0.0  # ids always dropped: no gradient
    assert _id_embedding_gradient(always, batch, training=False) > 0.0  # inference keeps the ids
    assert _id_embedding_gradient(_model(id_dropout=0.0), batch, training=True) > 0.0
    # Rate 0.5 on 10,000 known indices: about half become the OOV index 6; padding (-1) never changes.
    from trainer.model import drop_ids

    index = tf.constant(np.tile([0, 3, -1, 5], 2500), tf.int64)
    dropped = drop_ids(index, 0.5, oov_index=6).numpy()
    assert (dropped[2::4] == -1).all()
    share = np.mean(dropped[index.numpy() >= 0] == 6)
    assert 0.47 < share < 0.53, share
    kept = dropped != 6
    np.testing.assert_array_equal(dropped[kept], index.numpy()[kept])


@pytest.mark.parametrize("pooling", HISTORY_POOLINGS)
def test_training_lowers_loss(pooling):
    model = _model(logq_beta=0.5, history_pooling=pooling)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.03))
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    before = float(model.compute_loss(batch))
    dataset = tf.data.Dataset.from_tensors(batch).repeat(30)
    history = model.fit(dataset, epochs=1, verbose=0)
    after = float(model.compute_loss(batch))
    assert after < 0.5 * before, (before, after)
    assert {"retrieval_loss", "ranking_loss", "ranking_auc", "loss"} <= set(history.history)


def _ranking_head_gradients(model: TailTowerModel, batch) -> list[float]:
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    grads = tape.gradient(loss, model.ranking_head.trainable_variables)
    return [float(tf.reduce_sum(tf.abs(g))) for g in grads]


def test_ranking_only_and_retrieval_only_weights():
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    ranking_only = _model(retrieval_weight=0.0, ranking_weight=2.0)
    probs = ranking_only(batch).numpy().astype(np.float64)
    labels = np.asarray(LABELS, np.float64)
    bce = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    np.testing.assert_allclose(float(ranking_only.compute_loss(batch)), 2.0 * bce, rtol=1e-4)
    assert sum(_ranking_head_gradients(ranking_only, batch)) > 0

    retrieval_only = _model(ranking_weight=0.0)
    assert sum(_ranking_head_gradients(retrieval_only, batch)) == 0.0
    assert float(retrieval_only.compute_loss(batch)) > 0


def _bce(labels, logits) -> float:
    labels, logits = np.asarray(labels, np.float64), np.asarray(logits, np.float64)
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def test_position_bias_enters_the_ranking_loss_and_bucket_zero_adds_nothing():
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    model = _model(retrieval_weight=0.0, ranking_weight=1.0)
    offsets = np.arange(1, features.MAX_POSITION + 1, dtype=np.float32) / 4  # buckets 1 .. MAX_POSITION
    model.position_bias.bias.assign(offsets)
    logits = model.ranking_logits(model.query_embedding(batch), model.candidate_embedding(batch)).numpy()
    without = float(model.compute_loss(batch))
    np.testing.assert_allclose(without, _bce(LABELS, logits), rtol=1e-4)
    zeros = _batch(USERS, ITEMS, HISTORIES, LABELS, position_buckets=[0] * len(USERS))
    np.testing.assert_allclose(float(model.compute_loss(zeros)), without, rtol=1e-6)
    buckets = [0, 1, 2, 5, features.MAX_POSITION, features.MAX_POSITION + 3, 0, 1]  # past the last: clipped
    logged = _batch(USERS, ITEMS, HISTORIES, LABELS, position_buckets=buckets)
    offset = np.concatenate([[0.0], offsets])[np.minimum(buckets, features.MAX_POSITION)]
    np.testing.assert_allclose(float(model.compute_loss(logged)), _bce(LABELS, logits + offset), rtol=1e-4)


def test_position_bias_learns_the_slot_effect_and_serving_ignores_it():
    # Every (user, item, history) is shown twice: taken at slot 0 (bucket 1), not taken at slot 5 (bucket 6).
    # Only the position tells the two apart.
    n = len(USERS)
    slot_0, slot_5 = 1, 6
    batch = _batch(USERS * 2, ITEMS * 2, HISTORIES * 2, [1] * n + [0] * n, [slot_0] * n + [slot_5] * n)
    model = _model()
    model.compile(tf.keras.optimizers.Adam(0.05))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(10), verbose=0)
    bias = model.position_bias.values.numpy()
    assert bias.shape == (features.MAX_POSITION + 1,)
    assert bias[slot_0] > 0.1 and bias[slot_5] < -0.1, bias
    unseen = np.setdiff1d(np.arange(len(bias)), [slot_0, slot_5])
    np.testing.assert_array_equal(bias[unseen], 0.0)  # bucket 0 is fixed; no example has the others
    served = model(batch).numpy()
    moved = dict(batch, **{features.POSITION_BUCKET: tf.fill([2 * n], tf.constant(slot_5, tf.int64))})
    without = {key: value for key, value in batch.items() if key != features.POSITION_BUCKET}
    np.testing.assert_array_equal(model(moved).numpy(), served)
    np.testing.assert_array_equal(model(without).numpy(), served)


def test_detached_ranking_head_leaves_the_towers_to_retrieval():
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    ranking_only = _model(retrieval_weight=0.0, ranking_trains_towers=False)
    with tf.GradientTape(persistent=True) as tape:
        loss = ranking_only.compute_loss(batch, training=True)
    tower_grads = tape.gradient(loss, ranking_only.query_tower.trainable_variables)
    head_grads = tape.gradient(loss, ranking_only.ranking_head.trainable_variables)
    assert all(g is None or float(tf.reduce_sum(tf.abs(g))) == 0 for g in tower_grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in head_grads) > 0

    attached = _model(retrieval_weight=0.0, ranking_trains_towers=True)
    with tf.GradientTape() as tape:
        loss = attached.compute_loss(batch, training=True)
    grads = tape.gradient(loss, attached.query_tower.trainable_variables)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_temperature_gives_unit_embeddings_and_scaled_logits():
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    model = _model(temperature=0.1, ranking_weight=0.0)
    query, candidate = model.query_embedding(batch), model.candidate_embedding(batch)
    norms = np.linalg.norm(query.numpy(), axis=1)  # an untrained query tower maps an empty history to 0
    has_history = (batch[features.HISTORY_INDEX].numpy() >= 0).any(axis=1)
    np.testing.assert_allclose(norms[has_history], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(norms[~has_history], 0.0)
    np.testing.assert_allclose(np.linalg.norm(candidate.numpy(), axis=1), 1.0, rtol=1e-5)
    # The task's loss equals the untempered task's loss on embeddings scaled by 1/τ (cosine / τ logits).
    plain = tfrs.tasks.Retrieval(remove_accidental_hits=True)
    expected = retrieval_loss(
        plain,
        query / 0.1,
        candidate,
        batch[features.LABEL],
        batch[features.ITEM_LOG_PROB],
        batch[features.ITEM_ID],
        model.config.logq_beta,
    )
    np.testing.assert_allclose(float(model.compute_loss(batch)), float(expected), rtol=1e-5)


@pytest.mark.parametrize("pooling", ["position", "attention"])
def test_trains_under_mirrored_strategy_with_mixed_precision(pooling):
    # The GPU configuration (MirroredStrategy + mixed_float16), run on CPU: dtypes and loss scaling must work.
    from trainer.train import precision_policy

    tf.keras.utils.set_random_seed(0)
    vectors = np.random.default_rng(1).normal(size=[len(CATALOG), TEXT_DIM]).astype(np.float32)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope(), precision_policy(True):
        config = TrainerConfig(embedding_dim=16, history_pooling=pooling)
        model = TailTowerModel(config, SIZES, TextVectorCache(CATALOG, vectors))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.03))
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after building
    assert model.query_tower.item_vectors.text_projection.compute_dtype == "float16"
    if pooling == "attention":
        assert model.query_tower.pooling.blocks[0].attention.compute_dtype == "float16"
    buckets = [1, 2, 3, 0, 6, 7, 8, 0]  # the position bias trains under the float16 policy too
    batch = tf.data.Dataset.from_tensors(_batch(USERS, ITEMS, HISTORIES, LABELS, buckets))
    before = model.evaluate(batch, verbose=0, return_dict=True)["loss"]
    model.fit(batch.repeat(20), epochs=1, verbose=0)
    after = model.evaluate(batch, verbose=0, return_dict=True)["loss"]
    assert after < before, (before, after)
    assert model.query_embedding(next(iter(batch))).dtype == tf.float32
    assert model.position_bias.bias.dtype == tf.float32
    assert np.abs(model.position_bias.values.numpy()[[1, 6]]).min() > 0


def test_fine_tuned_text_encoder_gets_gradients():
    # trainable_bert_layers > 0: candidate text comes from the encoder on the example's tokens.
    tf.keras.utils.set_random_seed(0)
    encoder = FakeEncoder()
    cache = TextVectorCache(CATALOG, np.zeros([len(CATALOG), TEXT_DIM], np.float32))
    model = TailTowerModel(TrainerConfig(embedding_dim=16, trainable_bert_layers=1), SIZES, cache, encoder)
    batch = _batch(USERS, ITEMS, HISTORIES, LABELS)
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    (grad,) = tape.gradient(loss, encoder.trainable_variables)
    assert float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grad)))) > 0


def test_query_without_user_embedding_depends_on_history_only():
    model = _model(user_embedding=False)
    # Same histories, different users (one of them unknown): identical queries.
    a = model.query_embedding(_batch([0, 1], [0, 0], [[1, 2], [3]], [1, 1])).numpy()
    b = model.query_embedding(_batch([2, SIZES.users], [0, 0], [[1, 2], [3]], [1, 1])).numpy()
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a[0], a[1])  # ... and the history matters
    assert model.query_tower.user_embedding is None


def test_config_from_custom_config():
    config = TrainerConfig.from_custom_config(
        {"catalog_files": ["x"], "epochs": 3.0, "logq_beta": 0, "bert": "/m"}, ignore=("catalog_files",)
    )
    # Given keys converted to the field types; the others keep the dataclass defaults.
    assert (config.epochs, config.logq_beta, config.bert) == (3, 0.0, "/m")
    assert (type(config.epochs), type(config.logq_beta)) == (int, float)
    assert config.batch_size == TrainerConfig().batch_size
    assert isinstance(config.epochs, int) and isinstance(config.logq_beta, float)
    with pytest.raises(ValueError, match=r"Unknown trainer custom_config keys \['epoch'\]"):
        TrainerConfig.from_custom_config({"epoch": 3})
    with pytest.raises(ValueError, match="integer"):
        TrainerConfig.from_custom_config({"epochs": 2.5})
    with pytest.raises(ValueError, match="positive"):
        TrainerConfig.from_custom_config({"batch_size": 0})
    assert TrainerConfig.from_custom_config(None) == TrainerConfig()
    with pytest.raises(ValueError, match="id_dropout"):
        TrainerConfig(id_dropout=1.5)
    with pytest.raises(ValueError, match="mixed_negatives"):
        TrainerConfig(mixed_negatives=-1)
    with pytest.raises(ValueError, match="history_pooling"):
        TrainerConfig(history_pooling="max")
    with pytest.raises(ValueError, match="attention_blocks must be positive"):
        TrainerConfig(attention_blocks=0)
    with pytest.raises(ValueError, match=r"attention_heads \(3\) must divide embedding_dim \(64\)"):
        TrainerConfig(history_pooling="attention", embedding_dim=64, attention_heads=3)
    assert TrainerConfig(embedding_dim=64, attention_heads=3).attention_heads == 3  # unused by "position"
    with pytest.raises(ValueError, match="attention_dropout"):
        TrainerConfig(attention_dropout=1.0)
    assert TrainerConfig.from_custom_config({"user_embedding": False}).user_embedding is False
    with pytest.raises(ValueError, match="true or false"):
        TrainerConfig.from_custom_config({"user_embedding": 0})
