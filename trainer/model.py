"""The TFRS two-tower model: a query tower, an item (candidate) tower, retrieval and ranking tasks.

Both towers share one item representation, `ItemVectors` (item-id embedding + projected BERT text vector), so
a user's history items and the candidates live in the same space. Item text comes from `TextVectorCache`
(frozen BERT vectors of the catalog, keyed by raw item id) or, when BERT is fine-tuned, from a text encoder
run on the item's tokens (the catalog's, `CatalogTokens`, or the cached frozen layers' output).

Example (constructed inputs; `features` holds the transformed keys of `trainer.features`):
  cache = TextVectorCache(np.array([b"a", b"b"]), np.zeros([2, 8], np.float32))
  model = TailTowerModel(TrainerConfig(embedding_dim=16), VocabSizes(3, 2, 2, 2), cache)
  model.compile(tf.keras.optimizers.Adam(3e-3))
  model.fit(tf.data.Dataset.from_tensor_slices(features).batch(4))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import features
from trainer.config import TrainerConfig

Features = Mapping[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class VocabSizes:
    """Known ids per vocabulary; index == size is the OOV bucket, -1 is padding. Both embed to zeros."""

    users: int
    items: int
    brands: int
    categories: int


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of `values` [B, L, D] over the positions where `mask` [B, L] is true → [B, D] (0 if none)."""
    weights = tf.cast(mask, values.dtype)[..., tf.newaxis]
    total = tf.reduce_sum(values * weights, axis=1)
    return total / tf.maximum(tf.reduce_sum(weights, axis=1), tf.ones([], values.dtype))


class PositionPooling(tf.keras.layers.Layer):
    """Weighted mean of a left-padded, newest-last sequence [B, L, D] → [B, D], one learned weight per slot.

    Weights are a softmax of per-position logits over the unmasked slots; the logits start at zero, so the
    layer starts as `masked_mean` and learns how much more the recent items say. An empty row gives zeros.
    """

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape) -> None:
        self.position_logits = self.add_weight(
            name="position_logits", shape=[self.length], initializer="zeros", trainable=True
        )

    def call(self, values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        logits = tf.cast(self.position_logits, values.dtype)
        # exp(l - max l) <= 1: no overflow; the shift cancels, so no gradient flows through it. Masked
        # slots weigh 0.
        shifted = logits - tf.stop_gradient(tf.reduce_max(logits))
        weights = tf.exp(shifted)[tf.newaxis, :] * tf.cast(mask, values.dtype)
        total = tf.reduce_sum(values * weights[..., tf.newaxis], axis=1)
        norm = tf.reduce_sum(weights, axis=1, keepdims=True)
        return tf.math.divide_no_nan(total, norm)


class TransformerBlock(tf.keras.layers.Layer):
    """Post-norm transformer encoder block [B, L, D] → [B, L, D].

    Masked multi-head self-attention, then a position-wise feed-forward (Dense D relu → Dense D); each is
    followed by dropout (training only), a residual connection and LayerNormalization.
    """

    def __init__(self, dim: int, heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention = tf.keras.layers.MultiHeadAttention(heads, key_dim=dim // heads, dropout=dropout)
        self.attention_norm = tf.keras.layers.LayerNormalization()
        self.feed_forward = tf.keras.Sequential(
            [tf.keras.layers.Dense(dim, activation="relu"), tf.keras.layers.Dense(dim)]
        )
        self.feed_forward_norm = tf.keras.layers.LayerNormalization()
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, attention_mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`attention_mask` [B, L, L] bool: query slot i may attend to key slot j."""
        attended = self.attention(x, x, attention_mask=attention_mask, training=training)
        x = self.attention_norm(x + self.dropout(attended, training=training))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x), training=training))


class HistoryAttention(tf.keras.layers.Layer):
    """SASRec-style causal self-attention over a left-padded, newest-last sequence [B, L, D] → [B, D].

    Each slot's vector plus a learned embedding of its slot goes through `blocks` `TransformerBlock`s in
    which a slot attends to itself and the older unmasked slots; the output is the newest (last) slot's,
    which has seen the whole sequence. Masked slots never reach an unmasked slot's output. A masked slot
    attends to itself only (no all-masked softmax row), and an empty row (last slot masked) gives zeros.

    Args:
      length: L, the sequence length.
      dim: D, the vector size; `heads` must divide it.
      heads, blocks: attention heads per block, and blocks.
      dropout: training-time dropout rate (inputs, attention weights, both sublayer outputs).
    """

    def __init__(self, length: int, dim: int, heads: int, blocks: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"HistoryAttention: heads ({heads}) must divide dim ({dim})")
        self.length = length
        # Initialised at the id embeddings' scale (keras Embedding's default initializer).
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=[length, dim], initializer="uniform", trainable=True
        )
        # Sublayers are made here, not in build: they take the dtype policy in force now (mixed_float16
        # inside trainer.train.precision_policy); build runs later, outside it.
        self.input_dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(dim, heads, dropout) for _ in range(blocks)]

    def attention_mask(self, mask: tf.Tensor) -> tf.Tensor:
        """[B, L] unmasked slots → [B, L, L]: query i attends to unmasked keys j <= i, and to itself."""
        slots = tf.range(self.length)
        causal = slots[tf.newaxis, :] <= slots[:, tf.newaxis]  # [query, key]
        itself = tf.eye(self.length, dtype=tf.bool)
        return tf.logical_and(causal, tf.logical_or(tf.cast(mask, tf.bool)[:, tf.newaxis, :], itself))

    def sequence(self, values: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Every slot's output [B, L, D]; slot i's depends on slots <= i only."""
        x = values + tf.cast(self.position_embedding, values.dtype)[tf.newaxis]
        x = self.input_dropout(x, training=training)
        attention_mask = self.attention_mask(mask)
        for block in self.blocks:
            x = block(x, attention_mask, training=training)
        return x

    def call(self, values: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        newest = self.sequence(values, mask, training=training)[:, -1, :]
        return newest * tf.cast(mask, newest.dtype)[:, -1:]


class IdEmbedding(tf.keras.layers.Layer):
    """Embeds vocabulary indices [...] → [..., dim]; OOV (index >= vocab_size) and padding (< 0) → zeros.

    Zeros rather than a learned OOV row: no training example carries an unseen id, so such a row would stay
    at its random initialisation, and unknown users/cold items would all share that noise.
    """

    def __init__(self, vocab_size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding = tf.keras.layers.Embedding(max(vocab_size, 1), dim)

    def call(self, index: tf.Tensor) -> tf.Tensor:
        index = tf.cast(index, tf.int64)
        known = tf.logical_and(index >= 0, index < self.vocab_size)
        vectors = self.embedding(tf.where(known, index, tf.zeros_like(index)))
        return vectors * tf.cast(known, vectors.dtype)[..., tf.newaxis]


class PositionBias(tf.keras.layers.Layer):
    """The "shallow tower" of position-bias modelling: POSITION_BUCKET [B] → float32 logit offset [B].

    One learned scalar per logged slot's bucket (1 .. buckets - 1), starting at zero; bucket 0 (not a
    logged display) is a constant zero, so examples without a position learn and get nothing from it.
    Larger buckets clip to the last. Float32 whatever the global policy, like the logits it is added to.
    """

    def __init__(self, buckets: int = features.MAX_POSITION + 1, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.buckets = buckets
        # Made here, not in build: it exists (and is saved) however the model has been called.
        self.bias = self.add_weight(name="bias", shape=[buckets - 1], initializer="zeros", trainable=True)

    @property
    def values(self) -> tf.Tensor:
        """[buckets] the offset of each bucket, 0 for bucket 0."""
        return tf.concat([tf.zeros([1], self.bias.dtype), self.bias], axis=0)

    def call(self, bucket: tf.Tensor) -> tf.Tensor:
        bucket = tf.clip_by_value(tf.reshape(tf.cast(bucket, tf.int64), [-1]), 0, self.buckets - 1)
        return tf.gather(self.values, bucket)


def fill_misses(
    values: tf.Tensor, hit: tf.Tensor, encode: Callable[[Features], tf.Tensor], inputs: Features
) -> tf.Tensor:
    """values [B, ...] with each row where `hit` [B] is false replaced by `encode` of that row's `inputs`
    ({key: [B, ...]}, gathered to [M, ...]); `encode` runs only when some row misses."""
    missing = tf.where(tf.logical_not(hit))  # [M, 1]

    def encode_missing() -> tf.Tensor:
        encoded = encode({key: tf.gather_nd(value, missing) for key, value in inputs.items()})
        return tf.tensor_scatter_nd_update(values, missing, tf.cast(encoded, values.dtype))

    return tf.cond(tf.size(missing) > 0, encode_missing, lambda: values)


class TextVectorCache(tf.keras.layers.Layer):
    """Frozen text vectors of the catalog items, looked up by raw item id.

    Args:
      item_ids: [N] unique item ids (bytes).
      vectors: [N, T] float, the text vector of each id.
      fallback: optional encoder, called on `{INPUT_IDS, INPUT_MASK}` [M, MAX_TOKENS] → [M, T], that encodes
        the example's own tokens when its id is not in the cache (items absent from the catalog).
    """

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray, fallback=None, **kwargs):
        super().__init__(**kwargs)
        item_ids = np.asarray(item_ids, dtype=object)
        if len(set(item_ids.tolist())) != len(item_ids):
            raise ValueError("TextVectorCache: item_ids must be unique")
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(item_ids, tf.string), tf.range(len(item_ids), dtype=tf.int64)
            ),
            default_value=-1,
        )
        self.vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False, name="text_vectors")
        self.fallback = fallback

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    def lookup(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Item ids [...] → (vectors [..., T], zeros where missing; hit [...] bool)."""
        rows = self.table.lookup(item_ids)
        hit = rows >= 0
        vectors = tf.gather(self.vectors, tf.maximum(rows, 0))
        return vectors * tf.cast(hit, tf.float32)[..., tf.newaxis], hit

    def call(self, item_ids: tf.Tensor, tokens: Features | None = None) -> tf.Tensor:
        """Item ids [B] (+ tokens [B, MAX_TOKENS]) → [B, T]; BERT runs only on the cache misses."""
        vectors, hit = self.lookup(item_ids)
        if self.fallback is None or tokens is None:
            return vectors
        own = {key: tokens[key] for key in _TOKEN_KEYS}
        return fill_misses(vectors, hit, lambda miss: self.fallback(miss, training=False), own)


class FrozenLayerCache:
    """What the frozen part of a partly fine-tuned BERT hands its trainable top layers, once per catalog item,
    so that a CPU training step runs only the top layers, over the batch's distinct items.

    A plain object, not a Keras layer: the model does not track it, so it never lands in a SavedModel or a
    checkpoint (it is N × MAX_TOKENS × hidden floats: 240 MB for 2,420 items with MiniLM).

    Args:
      hidden: float32 [N, T, hidden], `BertTextEncoder.frozen_hidden_states` of catalog rows 0..N-1 (the
        rows of the model's `TextVectorCache`).
      mask: int [N, T], their token masks (tokens first, padding after).
    """

    def __init__(self, hidden: np.ndarray, mask: np.ndarray):
        if np.shape(hidden)[:2] != np.shape(mask):
            raise ValueError(f"hidden states {np.shape(hidden)} do not fit the masks {np.shape(mask)}")
        self.hidden = tf.Variable(np.asarray(hidden, np.float32), trainable=False, name="frozen_layer_cache")
        self.mask = tf.constant(np.asarray(mask), tf.int32)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    def rows(self, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Catalog rows [U] → (hidden [U, L, hidden], mask [U, L]), L the longest of their texts: padding
        every row has costs nothing to drop (it is masked out of attention and pooling)."""
        mask = tf.gather(self.mask, rows)
        length = tf.reduce_max(tf.reduce_sum(mask, axis=1))
        return tf.gather(self.hidden, rows)[:, :length], mask[:, :length]


_TOKEN_KEYS = (features.INPUT_IDS, features.INPUT_MASK)


class CatalogTokens:
    """The catalog's WordPiece tokens by catalog row: what a fully fine-tuned BERT reads for an example's
    item, since train examples do not carry item text (`features.EXAMPLE_ITEM_FEATURES`).

    A plain object like `FrozenLayerCache`: training only, never in a SavedModel or a checkpoint. int32 (BERT
    reads int32): N × MAX_TOKENS × 8 bytes, 512 MB at 1M items.

    Args:
      catalog: transformed catalog features with INPUT_IDS and INPUT_MASK [N, MAX_TOKENS], in the rows of the
        model's `TextVectorCache`.
    """

    def __init__(self, catalog: Mapping[str, np.ndarray]):
        self.tokens = {
            key: tf.Variable(np.asarray(catalog[key], np.int32), trainable=False, name=f"catalog_{key}")
            for key in _TOKEN_KEYS
        }
        self.size = int(self.tokens[features.INPUT_IDS].shape[0])

    def lookup(self, rows: tf.Tensor, own: Features) -> Features:
        """Catalog rows [B] → the rows' tokens; rows outside the catalog keep their example's `own` tokens."""
        known = tf.logical_and(rows >= 0, rows < self.size)
        safe = tf.where(known, rows, tf.zeros_like(rows))
        return {
            key: tf.where(
                known[:, tf.newaxis], tf.gather(self.tokens[key], safe), tf.cast(own[key], tf.int32)
            )
            for key in _TOKEN_KEYS
        }


_MIN_SQUARED_NORM = 1e-3
# Transformed features `TailTowerModel.candidate_embedding` reads.
CANDIDATE_KEYS = (
    features.ITEM_ID,
    features.ITEM_INDEX,
    features.BRAND_INDEX,
    features.CATEGORY_INDEX,
    features.PRICE_Z,
    *_TOKEN_KEYS,
)


def drop_ids(index: tf.Tensor, rate: float, oov_index: int) -> tf.Tensor:
    """Replaces each known index [...] by `oov_index` with probability `rate`; padding (< 0) is kept.

    Cold items are OOV at serving; training some known items the same way makes the text path carry them.
    """
    index = tf.cast(index, tf.int64)
    drop = tf.logical_and(tf.random.uniform(tf.shape(index)) < rate, index >= 0)
    return tf.where(drop, tf.constant(oov_index, tf.int64), index)


class ItemVectors(tf.keras.layers.Layer):
    """Shared item representation: id embedding + Dense(text vector). [...] ids, [..., T] text → [..., D].

    Args:
      id_dropout: training-time probability that an item's id embedding is the OOV zero vector.
    """

    def __init__(self, num_items: int, dim: int, id_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.id_dropout = id_dropout
        self.id_embedding = IdEmbedding(num_items, dim)
        self.text_projection = tf.keras.layers.Dense(dim)

    def call(self, item_index: tf.Tensor, text_vectors: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training and self.id_dropout > 0:
            item_index = drop_ids(item_index, self.id_dropout, oov_index=self.num_items)
        return self.id_embedding(item_index) + self.text_projection(text_vectors)


class CandidateTower(tf.keras.layers.Layer):
    """Item features [B] + text vectors [B, T] → candidate embeddings [B, D].

    concat(item vector, brand embedding, mean category embedding, price_z) → Dense(D).
    """

    def __init__(self, item_vectors: ItemVectors, sizes: VocabSizes, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.item_vectors = item_vectors
        self.brand_embedding = IdEmbedding(sizes.brands, dim)
        self.category_embedding = IdEmbedding(sizes.categories, dim)
        self.output_layer = tf.keras.layers.Dense(dim, dtype="float32")

    def call(self, inputs: Features, text_vectors: tf.Tensor, training: bool = False) -> tf.Tensor:
        item = self.item_vectors(inputs[features.ITEM_INDEX], text_vectors, training=training)
        brand = self.brand_embedding(inputs[features.BRAND_INDEX])
        category_index = tf.cast(inputs[features.CATEGORY_INDEX], tf.int64)
        categories = masked_mean(self.category_embedding(category_index), category_index >= 0)
        price = tf.cast(tf.reshape(inputs[features.PRICE_Z], [-1, 1]), item.dtype)
        return self.output_layer(tf.concat([item, brand, categories, price], axis=-1))


HistoryPooling = PositionPooling | HistoryAttention


def history_pooling(config: TrainerConfig) -> HistoryPooling | None:
    """The query tower's history pooling layer for `config.history_pooling`; None = the masked mean."""
    if config.history_pooling == "position":
        return PositionPooling(features.HISTORY_LENGTH)
    if config.history_pooling == "attention":
        return HistoryAttention(
            features.HISTORY_LENGTH,
            config.embedding_dim,
            config.attention_heads,
            config.attention_blocks,
            config.attention_dropout,
        )
    return None


class QueryTower(tf.keras.layers.Layer):
    """User index [B] + history [B, H] (indices and raw ids) → query embeddings [B, D].

    concat(user embedding, pooled history items' `ItemVectors`) → Dense(D), or the pooled history alone with
    `user_embedding=False`. `pooling` (see `history_pooling`) is a `PositionPooling` (a mean weighted by
    learned per-position weights), a `HistoryAttention` (causal self-attention read out at the newest
    item), or None: the plain mean. History text comes from the cache only (there are no history tokens);
    padding (-1) is masked, an empty history pools to zeros.
    """

    def __init__(
        self,
        item_vectors: ItemVectors,
        text_cache: TextVectorCache,
        sizes: VocabSizes,
        dim: int,
        user_embedding: bool = True,
        pooling: HistoryPooling | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.item_vectors = item_vectors
        self.text_cache = text_cache
        self.user_embedding = IdEmbedding(sizes.users, dim) if user_embedding else None
        self.pooling = pooling
        self.output_layer = tf.keras.layers.Dense(dim, dtype="float32")

    @property
    def position_pooling(self) -> PositionPooling | None:
        """The `PositionPooling` layer, if that is the pooling (its weights are summarised while training)."""
        return self.pooling if isinstance(self.pooling, PositionPooling) else None

    def call(self, inputs: Features, training: bool = False) -> tf.Tensor:
        history_index = tf.cast(inputs[features.HISTORY_INDEX], tf.int64)
        history_text, _ = self.text_cache.lookup(inputs[features.HISTORY])
        history_vectors = self.item_vectors(history_index, history_text, training=training)
        if self.pooling is None:
            history = masked_mean(history_vectors, history_index >= 0)
        else:
            history = self.pooling(history_vectors, history_index >= 0, training=training)
        if self.user_embedding is None:
            return self.output_layer(history)
        user = self.user_embedding(inputs[features.USER_INDEX])
        return self.output_layer(tf.concat([user, history], axis=-1))


@dataclasses.dataclass(frozen=True)
class SampledNegatives:
    """Extra retrieval negatives shared by every query row: embeddings [M, D], log_prob [M], ids [M]."""

    embeddings: tf.Tensor
    log_prob: tf.Tensor
    ids: tf.Tensor


class UniformCatalogSampler:
    """Draws `num_samples` catalog items uniformly (with replacement) → their candidate features.

    Args:
      catalog: transformed catalog features, [N, ...] arrays keyed by `trainer.features` names; the keys the
        candidate tower reads (`CANDIDATE_KEYS`) are kept, as numpy (graph constants when traced, so they
        are not saved with the model).
      num_samples: M, items per draw.
    """

    def __init__(self, catalog: Mapping[str, np.ndarray], num_samples: int):
        missing = sorted(set(CANDIDATE_KEYS) - set(catalog))
        if missing:
            raise ValueError(f"UniformCatalogSampler: the catalog lacks {missing}")
        self.catalog = {key: np.asarray(catalog[key]) for key in CANDIDATE_KEYS}
        self.size = len(self.catalog[features.ITEM_ID])
        if self.size == 0:
            raise ValueError("UniformCatalogSampler: the catalog is empty")
        self.num_samples = num_samples

    @property
    def log_prob(self) -> float:
        """log of each draw's probability, log(1 / N)."""
        return -float(np.log(self.size))

    def sample_indices(self) -> tf.Tensor:
        """[M] int64 catalog rows."""
        return tf.random.uniform([self.num_samples], 0, self.size, dtype=tf.int64)

    def features(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
        """Catalog rows [M] → candidate features {key: [M, ...]}."""
        return {key: tf.gather(tf.constant(value), rows) for key, value in self.catalog.items()}


def retrieval_loss(
    task: tfrs.tasks.Retrieval,
    query: tf.Tensor,
    candidate: tf.Tensor,
    labels: tf.Tensor,
    item_log_prob: tf.Tensor,
    candidate_ids: tf.Tensor,
    beta: float,
    negatives: SampledNegatives | None = None,
) -> tf.Tensor:
    """In-batch softmax over the batch's positives with logQ correction; mean over positive rows.

    Args:
      task: a `Retrieval` task whose loss sums over rows (the TFRS default).
      query, candidate: [B, D] embeddings; row i of each belongs to example i.
      labels: [B] 1.0 for positives; negatives neither are queries nor serve as in-batch negatives.
      item_log_prob: [B] log popularity of each candidate; sampling probability = exp(beta * log_prob),
        which the task subtracts in log space, so popular candidates lose logit (beta = 0: no correction).
      candidate_ids: [B] ids for removing accidental hits (same item as the positive, in another row).
      negatives: optional extra negatives appended as columns for every positive row, logQ-corrected with
        their own log_prob (same beta); one equal to a row's positive id is an accidental hit, removed.

    Returns:
      Scalar loss.
    """
    positive = tf.cast(labels, tf.float32) > 0.5
    batch = tf.shape(query)[0]
    score_mask = tf.logical_or(positive[tf.newaxis, :], tf.eye(batch, dtype=tf.bool))  # [B, B]
    log_prob = tf.cast(item_log_prob, tf.float32)
    if negatives is not None:
        candidate = tf.concat([candidate, tf.cast(negatives.embeddings, candidate.dtype)], axis=0)
        log_prob = tf.concat([log_prob, tf.cast(negatives.log_prob, tf.float32)], axis=0)
        candidate_ids = tf.concat([candidate_ids, negatives.ids], axis=0)
        extra = tf.ones([batch, tf.shape(negatives.ids)[0]], tf.bool)
        score_mask = tf.concat([score_mask, extra], axis=1)  # [B, B + M]
    weights = tf.cast(positive, tf.float32)
    total = task(
        query,
        candidate,
        sample_weight=weights,
        candidate_sampling_probability=tf.exp(beta * log_prob),
        candidate_ids=candidate_ids,
        compute_metrics=False,
        compute_batch_metrics=False,
        score_mask=score_mask,
    )
    return total / tf.maximum(tf.reduce_sum(weights), 1.0)


class TailTowerModel(tfrs.Model):
    """Two towers + ranking MLP; loss = retrieval_weight · retrieval + ranking_weight · ranking.

    The ranking loss reads the head's logit plus a learned `PositionBias` of the example's POSITION_BUCKET
    (0 when the inputs lack it), so that the head learns what was taken apart from where it was shown;
    `call` and `ranking_logits`, which serving uses, leave the position out.

    Args:
      config: embedding_dim, user_embedding, the history pooling settings, temperature, logq_beta,
        mixed_negatives, id_dropout, the two loss weights and ranking_trains_towers are read.
      sizes: vocabulary sizes of the transform output.
      text_cache: frozen catalog text vectors (history items always; candidates when `text_encoder` is None).
      text_encoder: when given (fine-tuned BERT), candidate text = text_encoder(the item's tokens) [B, T]
        while `fine_tuning` is true (it is by default), else the frozen vectors of `text_cache`. The tokens
        are the catalog's for catalog items when `catalog_tokens` is attached, else the example's own (train
        examples bring none). Its trainable
        weights learn at `config.bert_learning_rate` with their own Adam (`bert_optimizer`). With a
        `frozen_layer_cache` attached, the encoder's top layers run on the cached frozen part instead.
      catalog: transformed catalog features ([N, ...] arrays, `CANDIDATE_KEYS`); required when
        `config.mixed_negatives > 0`, where it is the pool of the uniformly sampled negatives.
    """

    def __init__(
        self,
        config: TrainerConfig,
        sizes: VocabSizes,
        text_cache: TextVectorCache,
        text_encoder: tf.keras.layers.Layer | None = None,
        catalog: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__()
        dim = config.embedding_dim
        self.config = config
        self.text_cache = text_cache
        self.text_encoder = text_encoder
        self.fine_tuning = text_encoder is not None
        self.frozen_layer_cache: FrozenLayerCache | None = None
        self.catalog_tokens: CatalogTokens | None = None
        self.bert_optimizer = None
        if text_encoder is not None:
            self.bert_optimizer = tf.keras.optimizers.Adam(config.bert_learning_rate)
        self.negative_sampler = None
        if config.mixed_negatives > 0:
            if catalog is None:
                raise ValueError("TrainerConfig.mixed_negatives > 0 needs the catalog: pass catalog=")
            self.negative_sampler = UniformCatalogSampler(catalog, config.mixed_negatives)
        self.item_vectors = ItemVectors(sizes.items, dim, id_dropout=config.id_dropout)
        self.query_tower = QueryTower(
            self.item_vectors, text_cache, sizes, dim, config.user_embedding, history_pooling(config)
        )
        self.candidate_tower = CandidateTower(self.item_vectors, sizes, dim)
        self.ranking_head = tf.keras.Sequential(
            [
                tf.keras.layers.Dense(dim, activation="relu"),
                tf.keras.layers.Dense(dim // 2, activation="relu"),
                tf.keras.layers.Dense(1, dtype="float32"),
            ]
        )
        self.position_bias = PositionBias(features.MAX_POSITION + 1)
        self.retrieval_task = tfrs.tasks.Retrieval(
            remove_accidental_hits=True, temperature=config.temperature or None
        )
        self.ranking_task = tfrs.tasks.Ranking(
            # SUM (divided by the batch size in compute_loss): distribution strategies refuse AUTO.
            loss=tf.keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM
            ),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="ranking_auc")],
        )
        for task in (self.retrieval_task, self.ranking_task):
            # Under mixed_float16 a layer casts its first input to float16; the in-batch logits, logQ
            # correction and losses must stay float32 (the tasks take no `autocast` argument).
            task._autocast = False
        self.retrieval_loss_metric = tf.keras.metrics.Mean("retrieval_loss")
        self.ranking_loss_metric = tf.keras.metrics.Mean("ranking_loss")

    def query_embedding(self, inputs: Features, training: bool = False) -> tf.Tensor:
        """Transformed features → [B, D] (unit length when `config.temperature` > 0)."""
        return self.normalize_embedding(self.query_tower(inputs, training=training))

    def normalize_embedding(self, embeddings: tf.Tensor) -> tf.Tensor:
        """Unit length when `config.temperature` > 0 (cosine scores), else unchanged."""
        if self.config.temperature > 0:
            # The floor on the squared norm bounds the gradient near zero vectors (a query with no
            # history starts at 0) to ~30×; the default 1e-12 gives 1e6×, which overflows float16 under
            # mixed precision.
            return tf.math.l2_normalize(embeddings, axis=-1, epsilon=_MIN_SQUARED_NORM)
        return embeddings

    def candidate_embedding(self, inputs: Features, training: bool = False) -> tf.Tensor:
        """Transformed features of the examples' items → [B, D] (unit length if `config.temperature` > 0)."""
        text = self.candidate_text(inputs, training=training)
        return self.normalize_embedding(self.candidate_tower(inputs, text, training=training))

    def candidate_text(self, inputs: Features, training: bool = False) -> tf.Tensor:
        """[B, T] text vectors of the examples' items: frozen (`text_cache`) or from the fine-tuned BERT."""
        tokens = {key: inputs[key] for key in _TOKEN_KEYS}
        item_ids = inputs[features.ITEM_ID]
        if self.text_encoder is None or not self.fine_tuning:
            return self.text_cache(item_ids, tokens)
        if self.frozen_layer_cache is None:
            if self.catalog_tokens is not None:
                tokens = self.catalog_tokens.lookup(self.text_cache.table.lookup(item_ids), tokens)
            return tf.cast(self.text_encoder(tokens, training=training), tf.float32)
        return self._top_layers_text(item_ids, tokens, training)

    def _top_layers_text(self, item_ids: tf.Tensor, tokens: Features, training: bool) -> tf.Tensor:
        """The encoder's top layers over the frozen layer cache, once per distinct item of the batch; items
        outside the cache (not in the catalog) go through the whole encoder."""
        cache = self.frozen_layer_cache
        rows = self.text_cache.table.lookup(item_ids)
        cached = tf.logical_and(rows >= 0, rows < cache.size)
        distinct, position = tf.unique(tf.where(cached, rows, tf.zeros_like(rows)))
        hidden, mask = cache.rows(distinct)
        text = tf.gather(self.text_encoder.top_layers(hidden, mask, training=training), position)
        own = {key: tokens[key] for key in _TOKEN_KEYS}
        return fill_misses(text, cached, lambda miss: self.text_encoder(miss, training=training), own)

    def ranking_logits(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
        """[B, D] query, [B, D] candidate → [B] click logits, position-free (what serving scores)."""
        return tf.squeeze(self.ranking_head(tf.concat([query, candidate], axis=-1)), axis=-1)

    def call(self, inputs: Features, training: bool = False) -> tf.Tensor:
        """Transformed features → [B] probability that the user takes the item (ranking head, whatever
        its POSITION_BUCKET)."""
        query = self.query_embedding(inputs)
        candidate = self.candidate_embedding(inputs, training=training)
        return tf.sigmoid(self.ranking_logits(query, candidate))

    def sampled_negatives(self, training: bool = False) -> SampledNegatives:
        """`config.mixed_negatives` catalog items drawn uniformly, through the candidate tower."""
        sampler = self.negative_sampler
        rows = sampler.sample_indices()
        sampled = sampler.features(rows)
        return SampledNegatives(
            embeddings=self.candidate_embedding(sampled, training=training),
            log_prob=tf.fill(tf.shape(rows), tf.constant(sampler.log_prob, tf.float32)),
            ids=sampled[features.ITEM_ID],
        )

    def compute_loss(self, inputs: Features, training: bool = False) -> tf.Tensor:
        query = self.query_embedding(inputs, training=training)
        candidate = self.candidate_embedding(inputs, training=training)
        labels = tf.cast(inputs[features.LABEL], tf.float32)
        negatives = None
        if self.negative_sampler is not None:
            negatives = self.sampled_negatives(training=training)
        retrieval = retrieval_loss(
            self.retrieval_task,
            query,
            candidate,
            labels,
            inputs[features.ITEM_LOG_PROB],
            # Raw ids, not indices: distinct cold items share the OOV index but are not accidental hits.
            inputs[features.ITEM_ID],
            self.config.logq_beta,
            negatives,
        )
        if not self.config.ranking_trains_towers:
            query, candidate = tf.stop_gradient(query), tf.stop_gradient(candidate)
        logits = self.ranking_logits(query, candidate) + self.position_bias(self._position_bucket(inputs))
        ranking = self.ranking_task(
            labels=labels[:, tf.newaxis], predictions=logits[:, tf.newaxis]
        ) / tf.cast(tf.shape(labels)[0], tf.float32)
        self.retrieval_loss_metric.update_state(retrieval)
        self.ranking_loss_metric.update_state(ranking)
        # Both parts are always computed so every layer is built and exportable, whatever the weights.
        return self.config.retrieval_weight * retrieval + self.config.ranking_weight * ranking

    @staticmethod
    def _position_bucket(inputs: Features) -> tf.Tensor:
        """POSITION_BUCKET [B]; all 0 (not logged) for inputs without it (transforms from before it)."""
        if features.POSITION_BUCKET in inputs:
            return inputs[features.POSITION_BUCKET]
        return tf.zeros_like(inputs[features.LABEL], tf.int64)

    def train_step(self, inputs: Features) -> dict[str, tf.Tensor]:
        """tfrs.Model.train_step via `optimizer.minimize`, which scales the loss under mixed precision.

        Replicas sum their gradients, so each replica's (per-example mean) loss is divided by their number.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
            total_loss = loss + regularization_loss
            replica_loss = total_loss / replicas
        bert_variables = self.text_encoder.trainable_variables if self.text_encoder is not None else []
        bert_ids = {id(v) for v in bert_variables}
        towers = [v for v in self.trainable_variables if id(v) not in bert_ids]
        if self.fine_tuning and bert_variables:
            self._minimize_at_two_rates(tape, replica_loss, towers, bert_variables)
        else:
            self.optimizer.minimize(replica_loss, towers, tape=tape)
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return metrics

    def _minimize_at_two_rates(
        self, tape: tf.GradientTape, loss: tf.Tensor, towers: list, bert_variables: list
    ) -> None:
        """The towers step with `optimizer`, BERT's trainable layers with `bert_optimizer`: pretrained weights
        want a learning rate ~100× smaller than freshly initialised ones."""
        scaler = self.optimizer
        if not isinstance(scaler, tf.keras.mixed_precision.LossScaleOptimizer):
            scaler = None
        if scaler is not None:
            with tape:
                loss = scaler.get_scaled_loss(loss)
        gradients = tape.gradient(loss, towers + bert_variables)
        if scaler is not None:
            gradients = scaler.get_unscaled_gradients(gradients)
        tower_gradients, bert_gradients = gradients[: len(towers)], gradients[len(towers) :]
        # The loss scaler skips a step whose gradients overflowed; BERT's step is zeroed with it.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in bert_gradients if g is not None])
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(tower_gradients, towers, strict=True) if g is not None]
        )
        self.bert_optimizer.apply_gradients(
            [
                (tf.where(finite, g, tf.zeros_like(g)), v)
                for g, v in zip(bert_gradients, bert_variables, strict=True)
                if g is not None
            ]
        )
