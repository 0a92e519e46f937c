"""A tiny random BERT for tests: a Hugging Face folder that `trainer.bert.load_bert` loads in a second.

Example:
    folder = write_tiny_bert(tmp_path / "bert", bert.fetch_minilm() / bert.VOCAB_FILE)
    encoder = bert.BertTextEncoder(bert.load_bert(str(folder)))
"""

import os
import shutil
from pathlib import Path

import numpy as np
import safetensors.numpy
import tensorflow as tf
import transformers
from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

from trainer import features
from trainer.bert import VOCAB_FILE, WEIGHTS_FILE


def write_tiny_bert(
    out_dir: str | os.PathLike,
    vocab_file: str | os.PathLike,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Writes a randomly initialised BERT over `vocab_file` as a Hugging Face folder that `load_bert` loads.

    Weights are PyTorch-named safetensors (like MiniLM's), drawn from a seeded numpy generator so the
    folder is reproducible without touching TensorFlow's global seed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vocab_file, out_dir / VOCAB_FILE)
    with open(vocab_file, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=features.MAX_TOKENS,
    )
    config.save_pretrained(out_dir)
    model = transformers.TFBertModel(config)
    model(model.dummy_inputs, training=False)
    state = _random_pytorch_state(model, np.random.default_rng(seed), config.initializer_range)
    safetensors.numpy.save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    return out_dir


def _random_pytorch_state(model: tf.keras.Model, rng: np.random.Generator, std: float) -> dict:
    """PyTorch-named arrays for all model variables: N(0, std) matrices, LayerNorm scales 1, biases 0."""
    state = {}
    for var in model.weights:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(
            var.name, start_prefix_to_remove="bert.", tf_weight_shape=var.shape
        )
        shape = tuple(var.shape)
        if name.endswith("LayerNorm.weight"):
            value = np.ones(shape, np.float32)
        elif len(shape) == 1:
            value = np.zeros(shape, np.float32)
        else:
            value = rng.normal(0.0, std, shape).astype(np.float32)
        state[name] = value.T.copy() if transpose is TransposeType.SIMPLE else value
    return state
