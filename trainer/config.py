"""Trainer hyperparameters: one typed dataclass, built from the Trainer's `custom_config`.

Imports nothing heavy: pipeline configs and command lines build and check a `TrainerConfig` before TensorFlow
is loaded. `from_mapping` builds any flat config dataclass from JSON-decoded values the same way.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

# The default BERT item-text encoder: MiniLM-L6-H384-uncased, which `trainer.bert.resolve_bert_dir` fetches
# into `<cache>/models/<this name>` (the Dockerfile fetches it into the image the same way).
DEFAULT_BERT = "all-minilm-l6-v2"
HISTORY_POOLINGS = ("mean", "position", "attention")

Config = TypeVar("Config")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of `trainer.train.run_fn`; every field is a `custom_config` key.

    Example:
      TrainerConfig.from_custom_config({"epochs": 2, "logq_beta": 0.5})
    """

    # BERT item-text encoder: a name `trainer.bert.resolve_bert_dir` knows, or a folder.
    bert: str = DEFAULT_BERT
    # 0 = frozen BERT, catalog text vectors cached once (CPU default); > 0 fine-tunes the top layers. On
    # amazon-office 1 layer tuned in the last 2 epochs scored Recall@10 0.1209 against frozen 0.1211 at 4x
    # the run's time (README, "Fine-tuning BERT on CPU"); on a GPU try 6 (all) with fine_tune_epochs 2.
    trainable_bert_layers: int = 0
    # Adam's learning rate for the fine-tuned BERT layers (the towers use `learning_rate`): BERT's usual
    # 2e-5..5e-5 at batch 32, scaled by ~sqrt(2048 / 32) = 8 for the default batch.
    bert_learning_rate: float = 1e-4
    # With trainable_bert_layers > 0: 0 fine-tunes BERT in every epoch; k > 0 only in the last k, the earlier
    # epochs training the towers over the frozen text vectors (a fine-tuned epoch costs minutes on CPU).
    fine_tune_epochs: int = 0
    embedding_dim: int = 64
    # Defaults below are what `make eval` on amazon-office chose (quick runs of run_fn on one Transform
    # output, Recall@10 / tail Recall@10 through `recommend`; the README has the full table):
    #   first defaults (user vector, batch 512, 2 epochs, β=1, ranking trains towers)  0.059 / 0.016
    #   no user vector                                                                0.062 / 0.011
    #   + batch 2048, 8 epochs                                                         0.074 / 0.014
    #   + β=0                                                                          0.060 / 0.046
    #   + ranking head detached from the towers                                       0.067 / 0.061
    #   + temperature 0.1 (cosine scores)                                              0.076 / 0.065
    #   (β=0.25 instead of 0: 0.072 / 0.053; 12 epochs instead of 8: +0.001 / +0.002)
    #   + id dropout 0.5 (for cold items, below; one `make eval`)                      0.071 / 0.059
    #   + history pooled by learned position weights (recent items count more)        0.102 / 0.085
    #   id dropout 0.25 instead of 0.5 (same cold-item recall, below)                 0.110 / 0.091
    #   (temperature 0.05 / 0.2 instead of 0.1: 0.091 / 0.085 and 0.114 / 0.085; embedding_dim 128: 0.110 /
    #   0.090; another seed: 0.113 / 0.090)
    # A learned per-user vector in the query tower; off, the query is the user's history alone (most users
    # have a handful of interactions and overfit their own vector).
    user_embedding: bool = False
    # How the query tower pools the history's item vectors: "mean", or "position" (a mean weighted by one
    # learned weight per history slot, newest last, so recent items can count more). On amazon-office the
    # learned weights put ~11× more on the newest item than on the oldest. "attention": SASRec-style causal
    # self-attention over the ordered history (item vectors + a learned embedding per slot), read out at the
    # newest slot, so the query can depend on the order of the items and on how they relate to each other.
    # Not the default: on amazon-office's validation split (standard protocol, one run, the blend chosen for
    # each) it scored Recall@10 / tail Recall@10 0.1291 / 0.0900 against position's 0.1303 / 0.0915 (towers
    # alone 0.1015 / 0.0688 against 0.1011 / 0.0754), at ~1.5× the training time per epoch. On
    # ml-latest-small's standard protocol (`make eval`, one run each): 0.0837 / 0.0180 against 0.1067 / 0.0299
    # (towers alone on validation 0.040 against 0.069), at 1.9× the time per epoch.
    history_pooling: str = "position"
    # The "attention" pooling's transformer blocks, heads (they must divide embedding_dim) and training-time
    # dropout rate; unused by the other poolings.
    attention_blocks: int = 1
    attention_heads: int = 2
    attention_dropout: float = 0.1
    # Retrieval uses the batch's positives as each other's negatives: bigger batches, more negatives.
    batch_size: int = 2048
    learning_rate: float = 3e-3
    # Used when the Trainer's train_args give no step count.
    epochs: int = 8
    # logQ correction strength: candidate sampling probability = exp(beta * item_log_prob); 0 = none.
    # Left at 0 (uncorrected in-batch negatives push the tail up); how much popularity a catalog rewards is
    # chosen after training instead, on the validation split, as the served score's popularity weight
    # (trainer/blend.py: gamma 1 ≈ beta 1), so no catalog needs its own beta. Before that choice existed,
    # beta 1 was right on ml-latest-small (Recall@10 0.103 vs 0.059) and wrong on amazon-office.
    logq_beta: float = 0.0
    # 0: retrieval scores are plain dot products. > 0: both towers' outputs are L2-normalised (cosine
    # scores) and the retrieval logits are divided by this temperature.
    temperature: float = 0.1
    # Mixed Negative Sampling (Yang et al. 2020): catalog items drawn uniformly per batch as extra retrieval
    # negatives (logQ probability 1/|catalog|, same beta); 0 = in-batch negatives only.
    mixed_negatives: int = 0
    # Training-time probability of replacing an item's id embedding (candidates and history) by the OOV zero
    # vector, so the text tower learns to stand alone for cold items; 0 = off. On amazon-office's cold-items
    # protocol (quick runs, position pooling) 0.25 and 0.5 both give cold-item Recall@10 0.069 against 0.100
    # on warm items (every baseline: 0); 0.25 keeps more warm accuracy on the standard protocol.
    id_dropout: float = 0.25
    retrieval_weight: float = 1.0
    ranking_weight: float = 1.0
    # Whether the ranking loss also trains the two towers. Its negatives are sampled catalog items, so its
    # gradient teaches the towers "popular = positive, random (mostly tail) = negative", which costs
    # retrieval accuracy and tail recall; False trains the ranking MLP on the towers' outputs as they are.
    ranking_trains_towers: bool = False
    # Item-item neighbours kept per catalog item for the served score's collaborative term (trainer/blend.py,
    # trainer/item_item.py; the Trainer chooses the method and its weight on the validation split); 0 = none.
    item_item_neighbours: int = 50
    # Length of the `top_k_*` lists of the `serving_default` signature.
    top_k: int = 10
    # Base-ranking candidates the `recommend` signature re-ranks (MMR / xQuAD); at least k is always used.
    rerank_pool: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        positive = (
            "embedding_dim",
            "batch_size",
            "learning_rate",
            "bert_learning_rate",
            "epochs",
            "top_k",
            "rerank_pool",
            "attention_blocks",
            "attention_heads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainerConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in (
            "trainable_bert_layers",
            "fine_tune_epochs",
            "logq_beta",
            "retrieval_weight",
            "ranking_weight",
            "mixed_negatives",
            "temperature",
            "item_item_neighbours",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.history_pooling not in HISTORY_POOLINGS:
            choice = self.history_pooling
            raise ValueError(f"TrainerConfig.history_pooling must be in {HISTORY_POOLINGS}, got {choice!r}")
        if self.history_pooling == "attention" and self.embedding_dim % self.attention_heads:
            raise ValueError(
                f"TrainerConfig.attention_heads ({self.attention_heads}) must divide embedding_dim "
                f"({self.embedding_dim})"
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(
                f"TrainerConfig.attention_dropout must be in [0, 1), got {self.attention_dropout!r}"
            )
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
        skipped = set(ignore)
        values = {k: v for k, v in (custom_config or {}).items() if k not in skipped}
        return from_mapping(cls, values, "trainer custom_config")

    @classmethod
    def from_json(cls, text: str) -> TrainerConfig:
        """`'{"epochs": 4}'` → TrainerConfig(epochs=4); ValueError names a bad key or value."""
        return cls.from_custom_config(parse_json_object(text, "trainer config"))


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Decodes a JSON object (a ValueError says which setting held what, when it is not one)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object of field: value, got {text!r}")
    return value


def from_mapping(cls: type[Config], values: Mapping[str, Any], what: str) -> Config:
    """Builds the flat dataclass `cls` from JSON-decoded `values`, converting each to its field's type.

    Raises:
      ValueError: on an unknown key (the message lists the known ones) or a value of the wrong kind; the
        dataclass's own `__post_init__` checks the ranges.
    """
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"Unknown {what} keys {unknown}; known keys: {known}")
    types = typing.get_type_hints(cls)
    return cls(**{k: _convert(f"{cls.__name__}.{k}", v, types[k]) for k, v in values.items()})


def _convert(name: str, value: Any, kind: Any) -> Any:
    """Casts a JSON value to a bool, int, float or str field (other field types are taken as they are)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if kind is int and not float(value).is_integer():
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return kind(value)
    return value
