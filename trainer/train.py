"""The Trainer's `run_fn`: reads transformed examples and the catalog, trains `TailTowerModel`, exports it.

On CPU (the default, `trainable_bert_layers == 0`) BERT is frozen: every catalog item's text is encoded once
at start and the towers read those cached vectors. With a GPU, training runs under MirroredStrategy with mixed
precision, and `trainable_bert_layers > 0` fine-tunes the top BERT layers on the candidates' catalog tokens
(on CPU over the cached output of the frozen layers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the WordPiece ops of the transform graph)
import tensorflow_transform as tft

from trainer import bert, blend, encoding_cache, export, features, item_item, refresh_kit
from trainer.config import TrainerConfig
from trainer.model import (
    CANDIDATE_KEYS,
    CatalogTokens,
    FrozenLayerCache,
    TailTowerModel,
    TextVectorCache,
    VocabSizes,
)

logger = logging.getLogger(__name__)

CATALOG_FILES_KEY = features.CATALOG_FILES_CONFIG
# Transformed features of a catalog item: what the candidate tower reads, plus what the export needs (the
# popularity behind the xQuAD tail prior, the tail flags).
CATALOG_KEYS = (*CANDIDATE_KEYS, features.ITEM_LOG_PROB, features.ITEM_IS_TAIL)
# Raw catalog features kept as they are, for the export's catalog metadata file (titles shown to users).
METADATA_KEYS = (features.TITLE, features.BRAND, features.CATEGORIES)
_SHUFFLE_BUFFER = 10_000
_MIX_BLOCK = 64  # records read in a row from one file when several are mixed


# ------------------------------------------------------------------------------------ data input
def _expand(file_patterns: str | Sequence[str]) -> list[str]:
    patterns = _patterns(file_patterns)
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {patterns}")
    return files


def make_dataset(
    file_patterns: str | Sequence[str],
    feature_spec: Mapping,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of parsed gzipped tf.Examples: {name: [B, ...]}; shuffled when `shuffle_seed` is given.

    Shuffled, the files are read side by side, each at a rate proportional to its size, before the shuffle
    buffer: with several splits (train + eval) read one after the other, the buffer would only mix within a
    split and every epoch would end on the eval split's rows.
    """
    files = _expand(file_patterns)
    if shuffle_seed is None:
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    else:
        dataset = _mixed_files(files, shuffle_seed)
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x: tf.io.parse_example(x, feature_spec), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _mixed_files(files: Sequence[str], seed: int) -> tf.data.Dataset:
    """Records of all `files`, in blocks of `_MIX_BLOCK` drawn from file i with probability ∝ its size.

    Blocks rather than single records: drawing per record made an epoch of input 3–8× slower on amazon-office.
    """
    if len(files) == 1:
        return tf.data.TFRecordDataset(files, compression_type="GZIP")
    sizes = np.array([max(tf.io.gfile.stat(f).length, 1) for f in files], np.float64)
    blocks = [tf.data.TFRecordDataset(f, compression_type="GZIP").batch(_MIX_BLOCK) for f in files]
    mixed = tf.data.Dataset.sample_from_datasets(
        blocks, weights=(sizes / sizes.sum()).tolist(), seed=seed, stop_on_empty_dataset=False
    )
    return mixed.unbatch()


def load_catalog(
    file_patterns: str | Sequence[str], tf_transform_output: tft.TFTransformOutput, batch_size: int = 1024
) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Transforms the raw catalog examples, one row per unique item id → (catalog, item metadata).

    catalog: {CATALOG_KEYS name: [N, ...] array}. item metadata: the raw METADATA_KEYS values of the same N
    rows, {TITLE: [str], BRAND: [str], CATEGORIES: [[str]]} ("" / [] where an example has none), for the
    export's catalog metadata file, and NEGATIVE_RATINGS: [int] (0 where an example has none; not in the
    schema: ExampleGen writes it on catalog examples only). Catalog examples carry only the item features;
    the user side is filled with neutral values so the transform graph can run. The first example of a
    repeated item id wins.
    """
    raw_spec = tf_transform_output.raw_feature_spec()
    item_spec = export.optional_raw_spec({k: raw_spec[k] for k in features.ITEM_FEATURES if k in raw_spec})
    negatives_spec = {features.NEGATIVE_RATINGS: tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    tft_layer = tf_transform_output.transform_features_layer()

    @tf.function
    def transform(serialized: tf.Tensor) -> tuple[dict, dict, tf.Tensor]:
        raw = tf.io.parse_example(serialized, item_spec)
        transformed = tft_layer(export.with_default_raw_features(raw, raw_spec))
        metadata = {key: _rows(raw[key]) for key in METADATA_KEYS if key in raw}
        negatives = tf.io.parse_example(serialized, negatives_spec)[features.NEGATIVE_RATINGS]
        return {key: transformed[key] for key in CATALOG_KEYS}, metadata, negatives

    dataset = tf.data.TFRecordDataset(_expand(file_patterns), compression_type="GZIP").batch(batch_size)
    chunks, metadata_chunks, negative_chunks = [], [], []
    for batch in dataset:
        transformed, metadata, negatives = transform(batch)
        chunks.append({k: v.numpy() for k, v in transformed.items()})
        metadata_chunks.append({k: v.to_list() for k, v in metadata.items()})
        negative_chunks.append(negatives.numpy())
    if not chunks:
        raise ValueError(f"the catalog {file_patterns} has no examples")
    catalog = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in CATALOG_KEYS}
    _, first = np.unique(catalog[features.ITEM_ID], return_index=True)
    keep = np.sort(first)
    metadata = _item_metadata(metadata_chunks, keep)
    metadata[features.NEGATIVE_RATINGS] = np.concatenate(negative_chunks)[keep].tolist()
    return {key: value[keep] for key, value in catalog.items()}, metadata


def seen_items(counts: np.ndarray, negative_ratings: Sequence[int] | None = None) -> np.ndarray:
    """[N] bool: the catalog rows the data knows, by a positive (`counts`) or a rating below the threshold
    (`load_catalog`'s NEGATIVE_RATINGS; None: none); the others are cold, the only ones the blend's text
    fill lends to."""
    seen = np.asarray(counts) > 0
    return seen if negative_ratings is None else seen | (np.asarray(negative_ratings) > 0)


def _rows(value: tf.Tensor | tf.SparseTensor | tf.RaggedTensor) -> tf.RaggedTensor:
    """A parsed raw feature ([B], [B, n], sparse or ragged) → its values per example, [B, (n)]."""
    if isinstance(value, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(value)
    if isinstance(value, tf.RaggedTensor):
        return value
    return tf.RaggedTensor.from_tensor(tf.reshape(value, [tf.shape(value)[0], -1]))


def _item_metadata(chunks: Sequence[Mapping[str, list]], keep: np.ndarray) -> dict[str, list]:
    """Per batch {METADATA_KEYS name: [[bytes]] per example} → the decoded values of rows `keep`."""

    def column(key: str) -> list[list[str]]:
        rows = [row for chunk in chunks for row in chunk.get(key, [])]  # none: not in the raw spec
        return [[v.decode("utf-8", "replace") for v in rows[i]] if rows else [] for i in keep]

    return {
        features.TITLE: [next(iter(values), "") for values in column(features.TITLE)],
        features.BRAND: [next(iter(values), "") for values in column(features.BRAND)],
        features.CATEGORIES: column(features.CATEGORIES),
    }


def vocab_sizes(tf_transform_output: tft.TFTransformOutput) -> VocabSizes:
    """Known ids per vocabulary of the transform output (the OOV bucket is the index after the last)."""
    size = tf_transform_output.vocabulary_size_by_name
    return VocabSizes(
        users=size(features.USER_VOCAB),
        items=size(features.ITEM_VOCAB),
        brands=size(features.BRAND_VOCAB),
        categories=size(features.CATEGORY_VOCAB),
    )


# ------------------------------------------------------------------------------------ training
def _has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """mixed_float16 while the model is built (layers keep their policy), then the previous policy again."""
    previous = tf.keras.mixed_precision.global_policy()
    if mixed:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def encode_catalog(
    catalog: Mapping[str, np.ndarray], encoder: bert.BertTextEncoder, cache_dir: str = ""
) -> np.ndarray:
    """[N, T] text vectors of the catalog with the (initial) BERT: only the items the encoding cache at
    `cache_dir` does not hold are encoded ("" = no cache, every item is)."""
    start = time.monotonic()
    logger.info("Encoding the text of %d catalog items with BERT ...", len(catalog[features.ITEM_ID]))
    ids, mask = catalog[features.INPUT_IDS], catalog[features.INPUT_MASK]
    encode = functools.partial(bert.encode_in_batches, encoder)
    if cache_dir:
        cache = encoding_cache.EncodingCache(cache_dir, encoding_cache.weights_digest(encoder), ids.shape[1])
        text = cache.encode(ids, mask, encode)
    else:
        text = encode(ids, mask)
    logger.info("Encoded the catalog in %.1f s", time.monotonic() - start)
    return text


def build_model(
    config: TrainerConfig,
    sizes: VocabSizes,
    catalog: Mapping[str, np.ndarray],
    encoder: bert.BertTextEncoder,
    text: np.ndarray | None = None,
    history_text: tuple[np.ndarray, np.ndarray] | None = None,
) -> TailTowerModel:
    """The compiled model over the catalog's text vectors `text` (encoded here when not given).

    history_text: (ids, [M, T] vectors) of items outside the catalog that histories may still hold (a
    refresh's removed items): the query tower reads their text, they are never candidates.
    """
    if text is None:
        text = encode_catalog(catalog, encoder)
    ids = np.asarray(catalog[features.ITEM_ID])
    if history_text is not None:
        ids, text = (
            np.concatenate([ids, np.asarray(history_text[0], object)]),
            np.concatenate([text, history_text[1]]),
        )
    fine_tune = config.trainable_bert_layers > 0
    with precision_policy(_has_gpu()):
        cache = TextVectorCache(ids, text, fallback=encoder)
        model = TailTowerModel(
            config, sizes, cache, text_encoder=encoder if fine_tune else None, catalog=catalog
        )
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    return model


def _log_epoch(epoch: int, logs: Mapping[str, float] | None) -> None:
    values = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
    logger.info("epoch %d: %s", epoch + 1, values)


def _schedule(train_steps: int | None, epochs: int) -> tuple[int, int | None]:
    """(epochs, steps per epoch): the Trainer's step count over at most `epochs` epochs, else full passes."""
    if not train_steps:
        return epochs, None
    epochs = min(epochs, train_steps)
    return epochs, math.ceil(train_steps / epochs)


def _subdir(folder: str | None, name: str) -> str | None:
    return os.path.join(folder, name) if folder else None


def _patterns(file_patterns: str | Sequence[str]) -> list[str]:
    return [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)


def read_positives(
    file_patterns: str | Sequence[str], feature_spec: Mapping, keys: Sequence[str], batch_size: int = 4096
) -> dict[str, np.ndarray]:
    """The `keys` of every positive (label 1) example of the files, as numpy arrays in file order."""
    spec = {key: feature_spec[key] for key in {*keys, features.LABEL}}
    chunks = []
    for batch in make_dataset(file_patterns, spec, batch_size):
        positive = batch[features.LABEL].numpy().reshape(-1) > 0.5
        chunks.append({key: batch[key].numpy()[positive] for key in keys})
    if not chunks:
        return {key: np.zeros([0]) for key in keys}
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in keys}


class CatalogRows:
    """Raw item ids (bytes) → catalog rows, PAD (-1) for padding ("") and ids outside the catalog."""

    def __init__(self, item_ids: np.ndarray):
        self.rows = {item_id: row for row, item_id in enumerate(np.asarray(item_ids).reshape(-1).tolist())}

    def __call__(self, item_ids: np.ndarray) -> np.ndarray:
        item_ids = np.asarray(item_ids)
        flat = [self.rows.get(item_id, item_item.PAD) for item_id in item_ids.reshape(-1).tolist()]
        return np.asarray(flat, np.int64).reshape(item_ids.shape)


def interactions(
    positives: Mapping[str, np.ndarray], rows: CatalogRows, num_items: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Training positives → (binary user × catalog-row matrix, positives per catalog row)."""
    items = rows(positives[features.ITEM_ID])
    known = items >= 0
    x = item_item.interaction_matrix(positives[features.USER_INDEX][known], items[known], num_items)
    return x, np.bincount(items[known], minlength=num_items)


def validation_split(
    model: TailTowerModel,
    candidate_vectors: np.ndarray,
    fit_positives: Mapping[str, np.ndarray],
    validation_positives: Mapping[str, np.ndarray],
    rows: CatalogRows,
    seed: int,
) -> blend.Validation:
    """The validation users' tower scores, histories, targets and training items (to exclude); a seeded
    sample of `blend.MAX_VALIDATION_USERS` of them when there are more."""
    targets = rows(validation_positives[features.ITEM_ID])
    keep = targets >= 0
    if keep.sum() > blend.MAX_VALIDATION_USERS:  # bound the [V, N] score matrix before it is built
        rng = np.random.default_rng(seed)
        sample = rng.choice(np.flatnonzero(keep), blend.MAX_VALIDATION_USERS, replace=False)
        keep = np.isin(np.arange(len(targets)), sample)
    inputs = {key: value[keep] for key, value in validation_positives.items() if key in _QUERY_KEYS}
    scores = query_vectors(model, inputs) @ candidate_vectors.T
    users = inputs[features.USER_INDEX]
    fit_users, fit_items = fit_positives[features.USER_INDEX], rows(fit_positives[features.ITEM_ID])
    by_user: dict[int, list[int]] = {}
    for user, item in zip(fit_users.tolist(), fit_items.tolist(), strict=True):
        if item >= 0:
            by_user.setdefault(user, []).append(item)
    seen = [by_user.get(user, []) for user in users.tolist()]
    lengths = [len(items) for items in seen]
    columns = np.concatenate([[], *seen]).astype(np.int64)
    exclude = sp.csr_matrix(
        (np.ones(len(columns)), columns, np.cumsum([0, *lengths])), shape=(len(users), len(candidate_vectors))
    )
    history = rows(inputs[features.HISTORY])
    return blend.Validation(scores.astype(np.float32), history, targets[keep], exclude, inputs)


def query_vectors(
    model: TailTowerModel, inputs: Mapping[str, np.ndarray], batch_size: int = 1024
) -> np.ndarray:
    """[U, D] the query tower on transformed query features (_QUERY_KEYS), in batches."""
    return export.in_batches(model.query_embedding, inputs, batch_size, model.config.embedding_dim)


def without_history_items(inputs: Mapping[str, np.ndarray], drop: np.ndarray) -> dict[str, np.ndarray]:
    """Query features with the history slots where `drop` [U, H] is true removed: the rest move right (newest
    last, left-padded again), as if those items had never been taken."""
    order = np.argsort(~drop, axis=1, kind="stable")  # dropped slots first, the others in their order
    moved = {}
    for key, pad in ((features.HISTORY, b""), (features.HISTORY_INDEX, -1)):
        values = np.where(drop, pad, inputs[key]).astype(inputs[key].dtype)
        moved[key] = np.take_along_axis(values, order, axis=1)
    return {**inputs, **moved}


def choose_blend(
    model: TailTowerModel,
    config: TrainerConfig,
    catalog: Mapping[str, np.ndarray],
    fit_positives: Mapping[str, np.ndarray],
    validation_positives: Mapping[str, np.ndarray],
    negative_ratings: Sequence[int] | None = None,
) -> tuple[blend.Blend, list[blend.Trial], list[blend.Trial]]:
    """The served score's mix (trainer/blend.py) that scores best on the validation positives, which `model`
    and the item-item tables did not see, with its trials and the cold terms' trials; the towers alone when
    there is no validation user. negative_ratings: [N] per catalog row (NEGATIVE_RATINGS; None: none)."""
    rows = CatalogRows(catalog[features.ITEM_ID])
    num_items = len(catalog[features.ITEM_ID])
    vectors = export.candidate_vectors(model, catalog, config.batch_size)
    validation = validation_split(model, vectors, fit_positives, validation_positives, rows, config.seed)
    if len(validation.targets) == 0:
        logger.warning("No validation positive in the catalog: serving the towers' score alone")
        return blend.Blend(), [], []
    x, counts = interactions(fit_positives, rows, num_items)
    # The ratings below the threshold are counted over all of ExampleGen's input, the validation span
    # included: a little look-ahead into which items are known, none into which the targets are.
    seen = seen_items(counts, negative_ratings)
    start = time.monotonic()
    tables = blend.candidate_tables(x, vectors, config.item_item_neighbours, seen)
    fill = item_item.text_fill(vectors, counts > 0, blend.TEXT_FILL_SIZE, seen=seen)  # as served_blend fills
    chosen, trials = blend.choose(
        validation,
        tables,
        item_item.apply_fill(blend.log_prob(counts), fill),
        np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1) > 0,
        config.top_k,
        pop_scale(config),
        seed=config.seed,
    )
    logger.info("Tried %d blends in %.1f s; best five:", len(trials), time.monotonic() - start)
    for trial in trials[:5]:
        logger.info("  %s: Recall %.4f, tail Recall %.4f", trial.blend, trial.recall, trial.tail_recall)
    fitted = FittedCatalog(x, counts, np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1) > 0, seen)
    chosen, cold_trials = choose_cold_terms(model, config, catalog, chosen, validation, fitted, vectors)
    return chosen, trials, cold_trials


def choose_cold_terms(
    model: TailTowerModel,
    config: TrainerConfig,
    catalog: Mapping[str, np.ndarray],
    warm: blend.Blend,
    validation: blend.Validation,
    fitted: FittedCatalog,
    vectors: np.ndarray,
) -> tuple[blend.Blend, list[blend.Trial]]:
    """`warm` with the cold terms `blend.choose_cold` picks on the same validation users, in catalogs where
    a seeded share of the items with positives are made cold (`cold_replay`). The model runs twice, over
    every draw at once: the drawn items' candidate vectors on the out-of-vocabulary id, and the queries of
    the histories without them."""
    counts = fitted.counts
    draws = blend.pseudo_cold_draws(counts, blend.PSEUDO_COLD_SHARE, blend.PSEUDO_COLD_DRAWS, config.seed)
    if not draws or validation.query_inputs is None:
        return warm, []
    start = time.monotonic()
    drawn = np.any(draws, axis=0)
    drawn_rows = {key: value[drawn] for key, value in catalog.items()}
    drawn_rows[features.ITEM_INDEX] = np.full_like(
        drawn_rows[features.ITEM_INDEX], model.item_vectors.num_items
    )
    cold_vectors = vectors.copy()
    cold_vectors[drawn] = export.candidate_vectors(model, drawn_rows, config.batch_size)
    history = validation.history_rows
    inputs = [
        without_history_items(validation.query_inputs, (history >= 0) & made_cold[np.maximum(history, 0)])
        for made_cold in draws
    ]
    every = {key: np.concatenate([one[key] for one in inputs]) for key in inputs[0]}
    queries = np.split(query_vectors(model, every), len(draws))
    rows = CatalogRows(catalog[features.ITEM_ID])
    new = blend.likely_new_items(counts, validation.targets, config.seed, fitted.seen)
    logger.info(
        "Cold replays: %d items without positives (%d of them seen: rated below the threshold), %.0f "
        "expected from the popularity profile; %d left out as likely new",
        int(np.sum(counts == 0)),
        int(np.sum(fitted.seen & (counts == 0))),
        blend.unseen_expected(counts),
        int(new.sum()),
    )
    replays = []
    for made_cold, replay_inputs, replay_queries in zip(draws, inputs, queries, strict=True):
        replay_vectors = np.where(made_cold[:, None], cold_vectors, vectors)
        scores = (replay_queries @ replay_vectors.T).astype(np.float32)
        scores[:, new] = blend.EXCLUDED
        replayed = blend.Validation(
            scores,
            rows(replay_inputs[features.HISTORY]),
            validation.targets,
            blend.without_items(validation.exclude, made_cold),
            replay_inputs,
        )
        replays.append(
            cold_replay(fitted, warm, config.item_item_neighbours, replayed, replay_vectors, made_cold)
        )
    new_share = float(new.sum()) / len(counts)
    chosen, trials = blend.choose_cold(replays, warm, config.top_k, pop_scale(config), new_share=new_share)
    logger.info("Tried %d cold terms in %.1f s", len(trials), time.monotonic() - start)
    return chosen, trials


@dataclasses.dataclass(frozen=True)
class FittedCatalog:
    """What the model was fitted on: binary user × catalog-row positives, positives per row, tail flags, and
    the rows the data knows (`seen_items`)."""

    x: sp.csr_matrix
    counts: np.ndarray
    is_tail: np.ndarray
    seen: np.ndarray


def cold_replay(
    fitted: FittedCatalog,
    warm: blend.Blend,
    neighbours: int,
    validation: blend.Validation,
    vectors: np.ndarray,
    made_cold: np.ndarray,
) -> blend.ColdReplay:
    """The validation users as `make eval`'s cold-item protocol would serve them had the `made_cold` items
    no positives. `validation` and `vectors` are already replayed (the items out of the users' histories and
    training items; their candidate vectors on the out-of-vocabulary id); here they also lose their item-item
    rows and their popularity, which the text fill lends them back as to any cold item (they are unseen
    there, as a new item is)."""
    counts = np.where(made_cold, 0, fitted.counts)
    seen = fitted.seen & ~made_cold
    fill = item_item.text_fill(vectors, counts > 0, blend.TEXT_FILL_SIZE, seen=seen)
    if warm.alpha > 0 and neighbours > 0:
        table = item_item.neighbour_table(blend.without_items(fitted.x, made_cold), warm.method, neighbours)
    else:
        table = item_item.NeighbourTable(np.zeros([len(counts), 0], np.int32), np.zeros([len(counts), 0]))
    return blend.ColdReplay(
        validation,
        table,
        fill,
        item_item.apply_fill(blend.log_prob(counts), fill),
        fitted.is_tail | made_cold,
        ~seen,
    )


def pop_scale(config: TrainerConfig) -> float:
    """The unit of the popularity term: τ, so that gamma 1 undoes the logits' missing log p (blend.py)."""
    return config.temperature if config.temperature > 0 else 1.0


class PositionWeightsSummary(tf.keras.callbacks.Callback):
    """Writes the query tower's learned history slot weights (age 0 = newest) to TensorBoard each epoch."""

    def __init__(self, log_dir: str):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "position_weights"))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        pooling = self.model.query_tower.position_pooling
        if pooling is None:
            return
        weights = tf.nn.softmax(tf.cast(pooling.position_logits, tf.float32)).numpy()[::-1]  # newest first
        with self.writer.as_default(step=epoch):
            for age, weight in enumerate(weights):
                tf.summary.scalar(f"position_weight/age_{age:02d}", weight)


def write_blend_summary(
    log_dir: str | None, trials: Sequence[blend.Trial], cold_trials: Sequence[blend.Trial], k: int
) -> None:
    """The validation trials of the blend choice and of its cold terms (scored on the pseudo-cold replays),
    best first, as two TensorBoard text tables."""
    if not log_dir:
        return
    columns = ["method", "recency", "alpha", "gamma", "cold_gain", "cold_offset"]
    columns += [f"Recall@{k}", f"tail Recall@{k}", f"cold Recall@{k}", f"warm Recall@{k}"]
    header = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|\n"

    def table(rows: Sequence[blend.Trial]) -> str:
        return header + "".join(
            f"| {t.blend.method} | {t.blend.recency:g} | {t.blend.alpha:g} | {t.blend.gamma:g} "
            f"| {t.blend.cold_gain:g} | {t.blend.cold_offset:g} "
            f"| {t.recall:.4f} | {t.tail_recall:.4f} | {t.cold_recall:.4f} | {t.warm_recall:.4f} |\n"
            for t in rows[:50]
        )

    with tf.summary.create_file_writer(os.path.join(log_dir, "blend")).as_default(step=0):
        tf.summary.text("validation_trials", table(trials))
        tf.summary.text("cold_trials", table(cold_trials))


def _fit(
    model: TailTowerModel,
    config: TrainerConfig,
    files: Sequence[str],
    fn_args,
    feature_spec: Mapping,
    log_dir: str | None,
) -> None:
    """Fits `model` on `files`; with `log_dir`, TensorBoard summaries (losses, validation metrics per epoch,
    the learned history position weights) are written there."""
    train = make_dataset(files, feature_spec, config.batch_size, shuffle_seed=config.seed)
    evaluation = make_dataset(fn_args.eval_files, feature_spec, config.batch_size)
    epochs, steps_per_epoch = _schedule(fn_args.train_steps, config.epochs)
    if steps_per_epoch:
        train = train.repeat()
    if fn_args.eval_steps:
        evaluation = evaluation.repeat()
    fit = functools.partial(
        model.fit,
        train,
        steps_per_epoch=steps_per_epoch,
        validation_data=evaluation,
        validation_steps=fn_args.eval_steps or None,
        callbacks=_callbacks(log_dir),
        verbose=0,
    )
    frozen_epochs = _frozen_epochs(config, epochs) if model.text_encoder is not None else 0
    if frozen_epochs:
        logger.info("Epochs 1-%d train the towers over frozen BERT vectors, then BERT tunes", frozen_epochs)
        model.fine_tuning = False
        fit(epochs=frozen_epochs)
        model.fine_tuning = True
        # Keras keeps the traced step functions; the candidate text they read has changed.
        model.train_function = model.test_function = model.predict_function = None
    start = time.monotonic()
    fit(initial_epoch=frozen_epochs, epochs=epochs)
    if model.text_encoder is not None:
        logger.info(
            "Fine-tuned BERT's top %d layer(s) for %d epoch(s) in %.0f s",
            config.trainable_bert_layers,
            epochs - frozen_epochs,
            time.monotonic() - start,
        )


def _frozen_epochs(config: TrainerConfig, epochs: int) -> int:
    """Epochs before BERT's layers start to train (`config.fine_tune_epochs`)."""
    return max(epochs - config.fine_tune_epochs, 0) if config.fine_tune_epochs else 0


def frozen_layer_cache(catalog: Mapping[str, np.ndarray], encoder: bert.BertTextEncoder) -> FrozenLayerCache:
    """The frozen BERT part's output for every catalog item (the CPU fine-tuning path)."""
    start = time.monotonic()
    ids, mask = catalog[features.INPUT_IDS], catalog[features.INPUT_MASK]
    hidden = bert.frozen_hidden_states_in_batches(encoder, ids, mask)
    logger.info(
        "Cached BERT's %d frozen layer(s) for %d catalog items (%.0f MB) in %.1f s",
        encoder.frozen_layers,
        len(ids),
        hidden.nbytes / 1e6,
        time.monotonic() - start,
    )
    return FrozenLayerCache(hidden, mask)


def _callbacks(log_dir: str | None) -> list[tf.keras.callbacks.Callback]:
    callbacks = [tf.keras.callbacks.LambdaCallback(on_epoch_end=_log_epoch)]
    if log_dir:
        callbacks += [
            tf.keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False, profile_batch=0),
            PositionWeightsSummary(log_dir),
        ]
    return callbacks


# Features of a positive example the blend choice reads: the query tower's inputs, the target, the user.
_QUERY_KEYS = (features.USER_INDEX, features.HISTORY_INDEX, features.HISTORY)
# Features of a training positive the item-item tables read: who took which item.
_FIT_KEYS = (features.USER_INDEX, features.ITEM_ID)


# TFX Trainer will call this function.
def run_fn(fn_args) -> None:
    """Trains on `fn_args.train_files`, chooses the served score's mix on `eval_files`, writes
    `fn_args.serving_model_dir`.

    When the eval files are among the train files (the offline harness trains on both), the mix is chosen
    with a first model trained without them, and the exported model is trained again on everything.

    `fn_args.custom_config` holds CATALOG_FILES_KEY (raw catalog file patterns, from the tailtower Trainer
    component) and any `TrainerConfig` field.
    """
    custom_config = dict(fn_args.custom_config or {})
    if CATALOG_FILES_KEY not in custom_config:
        raise ValueError(f"custom_config[{CATALOG_FILES_KEY!r}] is missing: use components.trainer.Trainer")
    cache_dir = custom_config.pop(features.ENCODING_CACHE_CONFIG, "")
    config = TrainerConfig.from_custom_config(custom_config, ignore=(CATALOG_FILES_KEY,))
    logger.info("Trainer config: %s", config)
    tf.keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    catalog, item_metadata = load_catalog(custom_config[CATALOG_FILES_KEY], tf_transform_output)
    sizes = vocab_sizes(tf_transform_output)
    spec = tf_transform_output.transformed_feature_spec()
    train_files, eval_files = _patterns(fn_args.train_files), _patterns(fn_args.eval_files)
    fit_files = [pattern for pattern in train_files if pattern not in eval_files]
    retrain = bool(fit_files) and len(fit_files) < len(train_files)
    if not fit_files:
        logger.warning(
            "Every training split is also the eval split (%s): the served blend is chosen on data the model "
            "trained on, which favours the towers; train on at least one other split",
            eval_files,
        )
    fit_files = fit_files if retrain else train_files

    strategy = tf.distribute.MirroredStrategy() if _has_gpu() else tf.distribute.get_strategy()

    bert_digests = []  # of the BERT as loaded, before any fine-tuning: what the catalog text was encoded with

    frozen_layers: list[FrozenLayerCache] = []  # computed once, shared by both models

    def new_model(text: np.ndarray | None = None) -> tuple[TailTowerModel, np.ndarray]:
        with strategy.scope():
            encoder = bert.BertTextEncoder(bert.load_bert(config.bert), config.trainable_bert_layers)
            text = encode_catalog(catalog, encoder, cache_dir) if text is None else text
            bert_digests.append(encoding_cache.weights_digest(encoder))
            model = build_model(config, sizes, catalog, encoder, text)
        # On CPU a fine-tuning step runs only BERT's trainable top layers, over cached frozen ones; a GPU
        # runs the whole encoder on every example (its speed is in the matmuls, the cache's in skipping them).
        if config.trainable_bert_layers and encoder.frozen_layers and not _has_gpu():
            frozen_layers[:] = frozen_layers or [frozen_layer_cache(catalog, encoder)]
            model.frozen_layer_cache = frozen_layers[0]
        elif config.trainable_bert_layers:
            model.catalog_tokens = CatalogTokens(catalog)
        return model, text

    log_dir = getattr(fn_args, "model_run_dir", None)  # TensorBoard: `tensorboard --logdir <model_run_dir>`
    first_log_dir = _subdir(log_dir, "validation-model") if retrain else log_dir
    model, text = new_model()
    _fit(model, config, fit_files, fn_args, spec, first_log_dir)
    fit_positives = read_positives(fit_files, spec, _FIT_KEYS)
    validation_positives = read_positives(eval_files, spec, (*_QUERY_KEYS, features.ITEM_ID))
    negative_ratings = item_metadata[features.NEGATIVE_RATINGS]
    chosen, trials, cold_trials = choose_blend(
        model, config, catalog, fit_positives, validation_positives, negative_ratings
    )
    write_blend_summary(log_dir, trials, cold_trials, config.top_k)
    if retrain:
        logger.info("Training again on %s, the validation split included", train_files)
        model, _ = new_model(text)
        _fit(model, config, train_files, fn_args, spec, log_dir)
        fit_positives = read_positives(train_files, spec, _FIT_KEYS)
    rows = CatalogRows(catalog[features.ITEM_ID])
    x, counts = interactions(fit_positives, rows, len(catalog[features.ITEM_ID]))
    vectors = export.candidate_vectors(model, catalog, config.batch_size)
    # Training's shortcuts: the served model runs the whole encoder, on the catalog's tokens as the catalog
    # examples bring them (the serving graph keeps no catalog-sized token table).
    model.frozen_layer_cache = None
    model.catalog_tokens = None
    frozen_layers.clear()
    seen = seen_items(counts, negative_ratings)
    served = blend.served_blend(
        chosen, x, counts, vectors, config.item_item_neighbours, pop_scale(config), seen=seen
    )
    export.export_serving_model(
        model,
        tf_transform_output,
        catalog,
        item_metadata,
        fn_args.serving_model_dir,
        config.top_k,
        served,
        rerank_pool=config.rerank_pool,
        vectors=vectors,
    )
    refresh_kit.write_kit(
        model,
        config,
        fn_args.transform_output,
        chosen,
        fit_positives,
        validation_positives,
        bert_digests[0],
        fn_args.serving_model_dir,
        seen_ids=np.asarray(catalog[features.ITEM_ID]).reshape(-1)[seen & (counts == 0)].tolist(),
    )
