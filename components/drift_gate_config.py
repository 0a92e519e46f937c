"""DriftThresholds: the drift gate's parameters (components/drift_gate.py), without TFX or TFDV imports, so
that pipeline configs build and check them cheaply; the component receives them as one JSON string."""

from __future__ import annotations

import dataclasses
import json

from trainer.config import from_mapping, parse_json_object


@dataclasses.dataclass(frozen=True)
class DriftThresholds:
    """Past these the run stops; a value <= 0 turns that check off."""

    item_popularity: float = 0.3  # L-infinity distance of the item_id distributions
    user_activity: float = 0.3  # L-infinity distance of the user_id distributions
    text_length: float = 0.5  # |the catalog's mean item text length now / before − 1|

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"DriftThresholds.{item.name} must be a number, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DriftThresholds:
        return from_mapping(cls, parse_json_object(text, "drift thresholds"), "drift thresholds")
