"""components.drift_gate on statistics of constructed data: distances, thresholds, the message.

Interaction statistics carry item and user ids; catalog statistics the item text (its only home)."""

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from components.drift_gate import check, measure
from components.drift_gate_config import DriftThresholds


def statistics(items: dict[str, int], users: int):
    rows = [item for item, n in items.items() for _ in range(n)]
    frame = pd.DataFrame({"item_id": rows, "user_id": [f"u{i % users}" for i in range(len(rows))]})
    return tfdv.generate_statistics_from_dataframe(frame)


def catalog(*text_lengths: int):
    frame = pd.DataFrame({"item_id": [str(i) for i in range(len(text_lengths))]})
    frame["text"] = ["x" * n for n in text_lengths]
    return tfdv.generate_statistics_from_dataframe(frame)


BEFORE = statistics({"a": 50, "b": 30, "c": 20}, users=10)
CATALOG_BEFORE = catalog(10, 10)


def test_distances_are_measured_per_check():
    after = statistics({"a": 10, "b": 30, "c": 60}, users=10)
    drifts = {d.check: d for d in measure(after, BEFORE, DriftThresholds(), catalog(12, 16), CATALOG_BEFORE)}
    assert drifts["item_popularity"].distance == pytest.approx(0.4)  # a: 0.5 → 0.1
    assert drifts["item_popularity"].detail == "moved most: a"
    assert drifts["user_activity"].distance == pytest.approx(0.0)
    assert drifts["text_length"].distance == pytest.approx(0.4)  # 10 → 14 bytes
    assert [d.failed for d in drifts.values()] == [True, False, False]


def test_the_same_data_passes_and_drift_fails_naming_feature_and_distance():
    check(measure(BEFORE, BEFORE, DriftThresholds(), CATALOG_BEFORE, CATALOG_BEFORE))
    after = statistics({"a": 10, "b": 30, "c": 60}, users=2)
    with pytest.raises(ValueError) as failed:
        check(measure(after, BEFORE, DriftThresholds(user_activity=0.9), catalog(30), CATALOG_BEFORE))
    message = str(failed.value)
    assert "item_id (item_popularity): distance 0.4, above threshold 0.3; moved most: a" in message
    assert "text (text_length): distance 2, above threshold 0.5; mean length 10.0 → 30.0 bytes" in message
    assert "user_id" not in message  # within its raised threshold


def test_a_threshold_of_zero_turns_its_check_off():
    after = statistics({"a": 10, "b": 30, "c": 60}, users=10)
    check(measure(after, BEFORE, DriftThresholds(item_popularity=0)))


def test_text_length_is_checked_only_between_two_catalogs():
    after = statistics({"a": 50, "b": 30, "c": 20}, users=10)
    assert "text_length" not in {d.check for d in measure(after, BEFORE, DriftThresholds())}
    # A previous run from before the catalog's statistics: nothing to compare the text with.
    assert "text_length" not in {
        d.check for d in measure(after, BEFORE, DriftThresholds(), catalog(30), None)
    }
    # The interaction statistics' own text (there is none now) is never read.
    with_text = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"item_id": ["a"], "text": ["x" * 99]}))
    drifts = {
        d.check: d for d in measure(with_text, BEFORE, DriftThresholds(), CATALOG_BEFORE, CATALOG_BEFORE)
    }
    assert drifts["text_length"].distance == 0


def test_thresholds_json_round_trip_and_errors():
    thresholds = DriftThresholds(item_popularity=0.2)
    assert DriftThresholds.from_json(thresholds.to_json()) == thresholds
    with pytest.raises(ValueError, match="Unknown drift thresholds keys"):
        DriftThresholds.from_json('{"items": 1}')
    with pytest.raises(ValueError, match="text_length must be a number"):
        DriftThresholds(text_length="high")
