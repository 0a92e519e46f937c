"""Trainer hyperparameters: one typed dataclass, built from the Trainer's `custom_config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of `trainer.train.run_fn`; every field is a `custom_config` key.

    Example:
      TrainerConfig.from_custom_config({"epochs": 2, "logq_beta": 0.5})
    """

    # BERT item-text encoder: a name `trainer.bert.resolve_bert_dir` knows, or a folder.
    bert: str = "all-minilm-l6-v2"
    # 0 = frozen BERT, catalog text vectors cached once (CPU default); > 0 fine-tunes the top layers.
    trainable_bert_layers: int = 0
    embedding_dim: int = 64
    # A learned per-user vector in the query tower; off, the query is the user's history alone (users with
    # few interactions overfit their own vector).
    user_embedding: bool = True
    batch_size: int = 512
    learning_rate: float = 3e-3
    # Used when the Trainer's train_args give no step count. On amazon-office the held-out AUC peaks after
    # epoch 2 and falls from there (0.81 → 0.73 by epoch 8) while Recall@10 drops too: more epochs overfit.
    epochs: int = 2
    # logQ correction strength: candidate sampling probability = exp(beta * item_log_prob); 0 = none.
    logq_beta: float = 1.0
    # 0: retrieval scores are plain dot products. > 0: both towers' outputs are L2-normalised (cosine
    # scores) and the retrieval logits are divided by this temperature.
    temperature: float = 0.0
    # Mixed Negative Sampling (Yang et al. 2020): catalog items drawn uniformly per batch as extra retrieval
    # negatives (logQ probability 1/|catalog|, same beta); 0 = in-batch negatives only.
    mixed_negatives: int = 0
    # Training-time probability of replacing an item's id embedding (candidates and history) by the OOV zero
    # vector, so the text tower learns to stand alone for cold items; 0 = off.
    id_dropout: float = 0.0
    retrieval_weight: float = 1.0
    ranking_weight: float = 1.0
    # Whether the ranking loss also trains the two towers. Its negatives are sampled catalog items, so its
    # gradient teaches the towers "popular = positive, random (mostly tail) = negative", which costs
    # retrieval accuracy and tail recall; False trains the ranking MLP on the towers' outputs as they are.
    ranking_trains_towers: bool = True
    # Length of the `top_k_*` lists of the `serving_default` signature.
    top_k: int = 10
    # Base-ranking candidates the `recommend` signature re-ranks (MMR / xQuAD); at least k is always used.
    rerank_pool: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("embedding_dim", "batch_size", "learning_rate", "epochs", "top_k", "rerank_pool")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainerConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in (
            "trainable_bert_layers",
            "logq_beta",
            "retrieval_weight",
            "ranking_weight",
            "mixed_negatives",
            "temperature",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.id_dropout <= 1.0:
            raise ValueError(f"TrainerConfig.id_dropout must be in [0, 1], got {self.id_dropout!r}")
        if self.retrieval_weight == 0 and self.ranking_weight == 0:
            raise ValueError("TrainerConfig: retrieval_weight and ranking_weight are both 0")

    @classmethod
    def from_custom_config(
        cls, custom_config: Mapping[str, Any] | None, ignore: Iterable[str] = ()
    ) -> TrainerConfig:
        """Builds the config from `fn_args.custom_config`, converting values to the field types.

        Args:
          custom_config: key → value (JSON-decoded, so ints may arrive as floats and vice versa).
          ignore: keys that belong to someone else (e.g. "catalog_files") and are skipped.

        Raises:
          ValueError: on a key that is neither a field nor ignored, or a value of the wrong kind.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (custom_config or {}).items() if k not in set(ignore)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"Unknown trainer custom_config keys {unknown}; known keys: {sorted(fields)}")
        return cls(**{k: _convert(k, v, fields[k].type) for k, v in values.items()})


def _convert(name: str, value: Any, type_name: Any) -> Any:
    """Casts `value` to the field's type (annotations are strings under `from __future__`)."""
    if str(type_name) == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"TrainerConfig.{name} must be true or false, got {value!r}")
        return value
    kind = {"str": str, "int": int, "float": float}[str(type_name)]
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"TrainerConfig.{name} must be an integer, got {value!r}")
    if kind is not str and isinstance(value, (str, bool)):
        raise ValueError(f"TrainerConfig.{name} must be a number, got {value!r}")
    return kind(value)
