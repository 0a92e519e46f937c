"""The Trainer's `run_fn`: reads transformed examples and the catalog, trains `TailTowerModel`, exports it.

On CPU (the default, `trainable_bert_layers == 0`) BERT is frozen: every catalog item's text is encoded once
at start and the towers read those cached vectors. With a GPU, training runs under MirroredStrategy with mixed
precision, and `trainable_bert_layers > 0` fine-tunes the top BERT layers on the candidates' own tokens.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the WordPiece ops of the transform graph)
import tensorflow_transform as tft

from trainer import bert, export, features
from trainer.config import TrainerConfig
from trainer.model import CANDIDATE_KEYS, TailTowerModel, TextVectorCache, VocabSizes

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
    patterns = [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)
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
    export's catalog metadata file. Catalog examples carry only the item features; the user side is filled
    with neutral values so the transform graph can run. The first example of a repeated item id wins.
    """
    raw_spec = tf_transform_output.raw_feature_spec()
    item_spec = export.optional_raw_spec({k: raw_spec[k] for k in features.ITEM_FEATURES if k in raw_spec})
    tft_layer = tf_transform_output.transform_features_layer()

    @tf.function
    def transform(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.RaggedTensor]]:
        raw = tf.io.parse_example(serialized, item_spec)
        transformed = tft_layer(export.with_default_raw_features(raw, raw_spec))
        metadata = {key: _rows(raw[key]) for key in METADATA_KEYS if key in raw}
        return {key: transformed[key] for key in CATALOG_KEYS}, metadata

    dataset = tf.data.TFRecordDataset(_expand(file_patterns), compression_type="GZIP").batch(batch_size)
    chunks, metadata_chunks = [], []
    for batch in dataset:
        transformed, metadata = transform(batch)
        chunks.append({k: v.numpy() for k, v in transformed.items()})
        metadata_chunks.append({k: v.to_list() for k, v in metadata.items()})
    if not chunks:
        raise ValueError(f"the catalog {file_patterns} has no examples")
    catalog = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in CATALOG_KEYS}
    _, first = np.unique(catalog[features.ITEM_ID], return_index=True)
    keep = np.sort(first)
    return {key: value[keep] for key, value in catalog.items()}, _item_metadata(metadata_chunks, keep)


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


def build_model(
    config: TrainerConfig, sizes: VocabSizes, catalog: Mapping[str, np.ndarray], encoder: bert.BertTextEncoder
) -> TailTowerModel:
    """Encodes the catalog's text once with the (initial) BERT and builds the compiled model."""
    start = time.monotonic()
    logger.info("Encoding the text of %d catalog items with BERT ...", len(catalog[features.ITEM_ID]))
    text = bert.encode_in_batches(
        encoder,
        catalog[features.INPUT_IDS],
        catalog[features.INPUT_MASK],
        batch_size=min(config.batch_size, 256),
    )
    logger.info("Encoded the catalog in %.1f s", time.monotonic() - start)
    fine_tune = config.trainable_bert_layers > 0
    with precision_policy(_has_gpu()):
        cache = TextVectorCache(catalog[features.ITEM_ID], text, fallback=None if fine_tune else encoder)
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


# TFX Trainer will call this function.
def run_fn(fn_args) -> None:
    """Trains on `fn_args.train_files`, validates on `eval_files`, writes `fn_args.serving_model_dir`.

    `fn_args.custom_config` holds CATALOG_FILES_KEY (raw catalog file patterns, from the tailtower Trainer
    component) and any `TrainerConfig` field.
    """
    custom_config = dict(fn_args.custom_config or {})
    if CATALOG_FILES_KEY not in custom_config:
        raise ValueError(f"custom_config[{CATALOG_FILES_KEY!r}] is missing: use components.trainer.Trainer")
    config = TrainerConfig.from_custom_config(custom_config, ignore=(CATALOG_FILES_KEY,))
    logger.info("Trainer config: %s", config)
    tf.keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    catalog, item_metadata = load_catalog(custom_config[CATALOG_FILES_KEY], tf_transform_output)

    strategy = tf.distribute.MirroredStrategy() if _has_gpu() else tf.distribute.get_strategy()
    with strategy.scope():
        encoder = bert.BertTextEncoder(bert.load_bert(config.bert), config.trainable_bert_layers)
        model = build_model(config, vocab_sizes(tf_transform_output), catalog, encoder)

    spec = tf_transform_output.transformed_feature_spec()
    train = make_dataset(fn_args.train_files, spec, config.batch_size, shuffle_seed=config.seed)
    evaluation = make_dataset(fn_args.eval_files, spec, config.batch_size)
    epochs, steps_per_epoch = _schedule(fn_args.train_steps, config.epochs)
    if steps_per_epoch:
        train = train.repeat()
    if fn_args.eval_steps:
        evaluation = evaluation.repeat()
    model.fit(
        train,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=evaluation,
        validation_steps=fn_args.eval_steps or None,
        callbacks=[tf.keras.callbacks.LambdaCallback(on_epoch_end=_log_epoch)],
        verbose=0,
    )
    export.export_serving_model(
        model,
        tf_transform_output,
        catalog,
        item_metadata,
        fn_args.serving_model_dir,
        config.top_k,
        batch_size=config.batch_size,
        rerank_pool=config.rerank_pool,
    )
