"""Item text vectors for intra-list diversity (ILD), when no SavedModel supplies its cached ones.

Encodes each item's `text` the way the pipeline does: WordPiece tokens of the BERT's vocab.txt
(`trainer.preprocessing.tokenize`, MAX_TOKENS) and mean-pooled last hidden states of the frozen BERT
(`trainer.bert.BertTextEncoder`). Results are cached in a .npz keyed by the BERT and the catalog.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np


def encode_items(texts: list[str], bert: str, batch_size: int = 128) -> np.ndarray:
    """[N] texts → [N, hidden] float32 BERT sentence vectors."""
    import tensorflow as tf

    from trainer import bert as bert_lib
    from trainer import preprocessing

    vocab = os.path.join(bert_lib.resolve_bert_dir(bert), bert_lib.VOCAB_FILE)
    tokenizer = preprocessing.bert_tokenizer(vocab)
    cls_id, sep_id = preprocessing.special_token_ids(vocab)
    ids, mask = [], []
    for lo in range(0, len(texts), 1024):
        batch_ids, batch_mask = preprocessing.tokenize(
            tokenizer, tf.constant(texts[lo : lo + 1024]), cls_id, sep_id
        )
        ids.append(batch_ids.numpy())
        mask.append(batch_mask.numpy())
    encoder = bert_lib.BertTextEncoder(bert_lib.load_bert(bert), trainable_layers=0)
    return bert_lib.encode_in_batches(encoder, np.concatenate(ids), np.concatenate(mask), batch_size)


def cached_item_vectors(item_ids: tuple[str, ...], texts: list[str], bert: str, cache_dir: str) -> np.ndarray:
    """`encode_items`, stored in cache_dir/item-vectors-<hash>.npz and reused when present."""
    key = hashlib.sha256("\x1f".join([bert, *item_ids, *texts]).encode("utf-8")).hexdigest()[:16]
    path = os.path.join(cache_dir, f"item-vectors-{key}.npz")
    if os.path.exists(path):
        return np.load(path)["vectors"]
    vectors = encode_items(texts, bert)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, vectors=vectors)
    return vectors
