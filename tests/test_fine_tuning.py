"""BERT fine-tuning in the model: the CPU path over cached frozen layers, its own learning rate, staging."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from serving.local_client import LocalClient
from tests.test_model import CATALOG, HISTORIES, ITEMS, LABELS, SIZES, USERS, _batch, _catalog
from tests.tiny_bert import write_tiny_bert
from trainer import bert, features, refresh_kit, train
from trainer.config import TrainerConfig
from trainer.model import CatalogTokens, FrozenLayerCache, TailTowerModel, TextVectorCache
from trainer.train import frozen_layer_cache

TOKEN_KEYS = (features.INPUT_IDS, features.INPUT_MASK)


def _catalog_tokens() -> dict[str, np.ndarray]:
    """Distinct WordPiece-like ids per catalog item, texts of different lengths (tokens first)."""
    ids = np.zeros([len(CATALOG), features.MAX_TOKENS], np.int64)
    mask = np.zeros_like(ids)
    for row in range(len(CATALOG)):
        length = 3 + 2 * row
        ids[row, :length] = 1000 + 37 * row + np.arange(length)
        mask[row, :length] = 1
    return {features.INPUT_IDS: ids, features.INPUT_MASK: mask}


def _fine_tuned_model(tiny_bert: str, **config) -> tuple[TailTowerModel, bert.BertTextEncoder, dict]:
    tf.keras.utils.set_random_seed(0)
    encoder = bert.BertTextEncoder(bert.load_bert(tiny_bert), trainable_layers=1)
    catalog = {**_catalog(), **_catalog_tokens()}
    text = bert.encode_in_batches(encoder, catalog[features.INPUT_IDS], catalog[features.INPUT_MASK])
    cache = TextVectorCache(CATALOG, text, fallback=encoder)
    model = TailTowerModel(
        TrainerConfig(embedding_dim=16, trainable_bert_layers=1, **config), SIZES, cache, encoder
    )
    return model, encoder, catalog


def _items_batch(catalog: dict, items: list[int]) -> dict[str, tf.Tensor]:
    """The shared test batch with each row's tokens the catalog's tokens of its item."""
    batch = _batch(USERS, items, HISTORIES, LABELS)
    return {**batch, **{key: tf.constant(catalog[key][items]) for key in TOKEN_KEYS}}


def test_top_layers_over_the_cache_give_the_whole_encoders_text(tiny_bert):
    model, encoder, catalog = _fine_tuned_model(tiny_bert)
    batch = _items_batch(catalog, ITEMS)
    # One row's item is not in the catalog: it goes through the whole encoder on its own tokens.
    batch[features.ITEM_ID] = tf.constant(np.array([b"new", *CATALOG[ITEMS[1:]]], dtype=object))
    whole = model.candidate_text(batch).numpy()
    model.frozen_layer_cache = frozen_layer_cache(catalog, encoder)
    np.testing.assert_allclose(model.candidate_text(batch).numpy(), whole, atol=1e-5)
    assert not np.allclose(whole[0], whole[1])
    # The catalog rows read the cache (and only those): change it and they change.
    model.frozen_layer_cache.hidden.assign(tf.zeros_like(model.frozen_layer_cache.hidden))
    changed = model.candidate_text(batch).numpy()
    np.testing.assert_allclose(changed[0], whole[0], atol=1e-5)
    assert not np.allclose(changed[1:], whole[1:], atol=1e-3)


def test_the_whole_encoder_reads_a_catalog_items_tokens_from_the_catalog(tiny_bert):
    # Interaction examples carry no item text (their tokens are [CLS] [SEP] at most): the catalog's tokens
    # are read by item id. An item outside the catalog keeps its example's own tokens.
    model, _, catalog = _fine_tuned_model(tiny_bert)
    model.catalog_tokens = CatalogTokens(catalog)
    full = _items_batch(catalog, ITEMS)
    expected = model.candidate_text(full).numpy()
    bare = {**full, **{key: tf.zeros_like(full[key]) for key in TOKEN_KEYS}}
    np.testing.assert_allclose(model.candidate_text(bare).numpy(), expected, atol=1e-5)
    # Row 0 becomes an unknown item: it is encoded from the tokens its example brings (here ITEMS[1]'s).
    own = {**bare, features.ITEM_ID: tf.constant(np.array([b"new", *CATALOG[ITEMS[1:]]], dtype=object))}
    for key in TOKEN_KEYS:
        own[key] = tf.tensor_scatter_nd_update(bare[key], [[0]], full[key][1:2])
    text = model.candidate_text(own).numpy()
    assert ITEMS[0] != ITEMS[1]
    np.testing.assert_allclose(text[0], expected[1], atol=1e-5)
    np.testing.assert_allclose(text[1:], expected[1:], atol=1e-5)
    assert not np.allclose(text[0], expected[0], atol=1e-3)


def test_frozen_layer_cache_stays_out_of_the_model(tiny_bert, tmp_path):
    # It is catalog-sized: never saved with the model, never in its variables.
    model, encoder, catalog = _fine_tuned_model(tiny_bert)
    model.frozen_layer_cache = frozen_layer_cache(catalog, encoder)
    model.compile(tf.keras.optimizers.Adam(1e-2))
    model.train_step(_items_batch(catalog, ITEMS))
    cached = model.frozen_layer_cache.hidden
    assert cached.shape == (len(CATALOG), features.MAX_TOKENS, encoder.hidden_size)
    assert all(v is not cached for v in model.variables)
    saved = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    shapes = [shape for _, shape in tf.train.list_variables(saved)]
    assert [len(CATALOG), encoder.hidden_size] in shapes  # the text vectors are saved ...
    assert list(cached.shape) not in shapes  # ... the frozen layers' cache is not


def test_frozen_layer_cache_checks_its_shapes():
    with pytest.raises(ValueError, match="do not fit"):
        FrozenLayerCache(np.zeros([3, 4, 2]), np.zeros([3, 5]))


def _changes(model: TailTowerModel, encoder: bert.BertTextEncoder, batch: dict) -> tuple[float, float]:
    """Largest change of a BERT weight and of a tower weight over one training step."""
    bert_ids = {id(v) for v in encoder.trainable_variables}
    model.train_step(batch)  # builds every layer and optimizer slot
    before = {id(v): v.numpy() for v in model.trainable_variables}
    model.train_step(batch)
    deltas: dict[bool, float] = {True: 0.0, False: 0.0}
    for v in model.trainable_variables:
        change = float(np.max(np.abs(v.numpy() - before[id(v)])))
        deltas[id(v) in bert_ids] = max(deltas[id(v) in bert_ids], change)
    return deltas[True], deltas[False]


@pytest.mark.parametrize("cached", [False, True])
def test_bert_layers_learn_at_their_own_rate(tiny_bert, cached):
    model, encoder, catalog = _fine_tuned_model(tiny_bert, bert_learning_rate=1e-4)
    if cached:
        model.frozen_layer_cache = frozen_layer_cache(catalog, encoder)
    model.compile(tf.keras.optimizers.Adam(1e-2))
    bert_change, tower_change = _changes(model, encoder, _items_batch(catalog, ITEMS))
    # Adam's steps are at most about its learning rate.
    assert 0 < bert_change <= 1.1e-4
    assert 2e-3 < tower_change <= 1.1e-2


def test_towers_alone_learn_while_not_fine_tuning(tiny_bert):
    # fine_tune_epochs: the first epochs train the towers over the frozen vectors.
    model, encoder, catalog = _fine_tuned_model(tiny_bert)
    model.fine_tuning = False
    model.compile(tf.keras.optimizers.Adam(1e-2))
    bert_change, tower_change = _changes(model, encoder, _items_batch(catalog, ITEMS))
    assert bert_change == 0
    assert tower_change > 2e-3


def test_run_fn_fine_tunes_the_top_layer_over_the_cache_and_exports_the_whole_encoder(
    trained, tmp_path, caplog
):
    # trainable_bert_layers 1 of 2 on CPU, BERT tuned in the last of 2 epochs: the Trainer caches the frozen
    # layer, trains, and exports a model (and refresh kit) with the tuned layer and no cache. The data and
    # transform are those of tests/test_export.py's trained model.
    from tests.test_export import ITEMS, _serialize

    workdir = trained.workdir
    vocab = bert.fetch_minilm() / bert.VOCAB_FILE
    bert_dir = write_tiny_bert(tmp_path / "bert", vocab, hidden=16, layers=2, heads=2)
    serving_dir = str(tmp_path / "serving")
    fn_args = tfx.components.FnArgs(
        train_files=[os.path.join(workdir, "train", "*")],
        eval_files=[os.path.join(workdir, "eval", "*")],
        transform_output=os.path.join(workdir, "transform_output"),
        serving_model_dir=serving_dir,
        train_steps=None,
        eval_steps=None,
        custom_config={
            "catalog_files": [os.path.join(workdir, "catalog.gz")],
            "bert": str(bert_dir),
            "epochs": 2,
            "batch_size": 16,
            "embedding_dim": 8,
            "trainable_bert_layers": 1,
            "fine_tune_epochs": 1,
            "bert_learning_rate": 1e-3,
        },
    )
    with caplog.at_level(logging.INFO):
        train.run_fn(fn_args)
    assert "Cached BERT's 1 frozen layer(s) for 10 catalog items" in caplog.text
    assert "Epochs 1-1 train the towers over frozen BERT vectors" in caplog.text
    assert "Fine-tuned BERT's top 1 layer(s) for 1 epoch(s)" in caplog.text

    saved = os.path.join(serving_dir, "variables", "variables")
    shapes = [shape for _, shape in tf.train.list_variables(saved)]
    assert [len(ITEMS), features.MAX_TOKENS, 16] not in shapes
    # The kit's tuned top layer moved away from the pretrained one; the frozen layer did not.
    kit = refresh_kit.read_kit(serving_dir)
    reader = tf.train.load_checkpoint(kit.towers)
    pretrained = bert.BertTextEncoder(bert.load_bert(str(bert_dir)), 1).bert.bert.encoder.layer
    for layer, tuned in ((0, False), (1, True)):
        name = f"text_encoder/bert/bert/encoder/layer/{layer}/attention/self_attention/query/kernel"
        kernel = reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")
        expected = pretrained[layer].attention.self_attention.query.kernel.numpy()
        assert np.allclose(kernel, expected) != tuned
    knobs = {features.MMR_LAMBDA: 0.0, features.XQUAD_LAMBDA: 0.0, features.KEEP_HISTORY: 0}
    knobs[features.NEW_ITEM_BOOST] = 0.0
    answer = LocalClient(serving_dir).recommend(["u0"], [["i0", "i1"]], 3, **knobs).item_ids()
    assert len(answer[0]) == 3 and not {"i0", "i1", ""} & set(answer[0])
    # The Evaluator's examples carry no item text: a catalog item is scored by its tuned candidate vector,
    # as `rank` scores it.
    loaded = tf.saved_model.load(serving_dir)
    row = {features.USER_ID: [b"u0"], features.HISTORY: [b"i0", b"i1"], features.ITEM_ID: [b"i2"]}
    score = loaded.signatures[features.SERVING_DEFAULT_SIGNATURE](examples=tf.constant([_serialize(row)]))
    ranked = loaded.signatures[features.RANK_SIGNATURE](
        **{
            features.USER_ID: tf.constant(["u0"]),
            features.HISTORY: tf.constant([["i0", "i1"]]),
            features.ITEM_IDS: tf.constant([["i2"]]),
        }
    )
    np.testing.assert_allclose(
        score[features.SCORE].numpy(), ranked[features.SCORES].numpy()[:, 0], rtol=1e-5
    )
