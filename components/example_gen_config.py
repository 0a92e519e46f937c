"""ExampleGenConfig: the parameters of `components.example_gen.InteractionsExampleGen`.

A module of its own, importing neither TensorFlow, Beam nor TFX, so that pipeline configs, command lines and
the offline evaluation can build and check it cheaply. The component receives it as one JSON string
(`to_json` / `from_json`): the defaults live here only.

Example:
    config = ExampleGenConfig(num_negatives=2)
    ExampleGenConfig.from_json(config.to_json()) == config  # True
"""

from __future__ import annotations

import dataclasses
import json

from components import interactions
from serving.log_fields import SHOWN, SHOWN_IMPRESSIONS
from trainer import features
from trainer.config import from_mapping, parse_json_object


@dataclasses.dataclass(frozen=True)
class ExampleGenConfig:
    """How interactions become examples; validated on construction."""

    # Items of a user's earlier positives kept as the example's history (newest last).
    history_length: int = features.HISTORY_LENGTH
    # Sampled negatives per positive (label 0), drawn from the items with train positives.
    num_negatives: int = 4
    negative_sampling: str = interactions.UNIFORM
    split_mode: str = interactions.LAST_PER_USER
    # GLOBAL_TIME split: positives after this quantile of all positive times go to `eval`.
    eval_time_quantile: float = 0.9
    # A rated interaction is a positive when its rating is >= this; implicit rows (no rating) always are.
    rating_threshold: float = 4.0
    # The run fails when a file's share of rejected rows exceeds this.
    max_bad_share: float = 0.05
    seed: int = 0
    # With the service's logs (the component's logs_dir): how many of the newest closed spans are read (0 =
    # all), and what counts as displayed (a real negative when not taken): impression events, or "served":
    # every served slot (for shops that send no impressions).
    log_spans: int = 0
    log_shown: str = SHOWN_IMPRESSIONS

    def __post_init__(self) -> None:
        checks = {
            "history_length must be >= 0": self.history_length >= 0,
            "num_negatives must be >= 0": self.num_negatives >= 0,
            f"negative_sampling must be one of {interactions.SAMPLING_MODES}": self.negative_sampling
            in interactions.SAMPLING_MODES,
            f"split_mode must be one of {interactions.SPLIT_MODES}": self.split_mode
            in interactions.SPLIT_MODES,
            "eval_time_quantile must be in (0, 1)": 0.0 < self.eval_time_quantile < 1.0,
            "max_bad_share must be in [0, 1]": 0.0 <= self.max_bad_share <= 1.0,
            "log_spans must be >= 0": self.log_spans >= 0,
            f"log_shown must be one of {SHOWN}": self.log_shown in SHOWN,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"ExampleGenConfig: {'; '.join(failed)} (got {self})")

    def to_json(self) -> str:
        """Every field, as the component's `config` parameter (and ML Metadata) records it."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExampleGenConfig:
        """The inverse of `to_json`; fields left out take their defaults, unknown keys are an error."""
        return from_mapping(cls, parse_json_object(text, "example gen config"), "example gen config")
