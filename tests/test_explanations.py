"""serving.explanations: which code is shown and its text."""

import pytest

from serving.explanations import CODES, reason_code, reason_text
from trainer import features


def test_a_rule_placement_comes_before_the_models_reason():
    assert reason_code(features.REASON_SIMILAR_TO, sponsored=True, placed_by_rule=False) == "sponsored"
    assert reason_code(features.REASON_SIMILAR_TO, sponsored=False, placed_by_rule=True) == "rule"
    assert reason_code(features.REASON_POPULAR, sponsored=False, placed_by_rule=False) == "popular"
    assert reason_code("", sponsored=False, placed_by_rule=False) is None  # a model without explanations


@pytest.mark.parametrize(
    "code, title, text",
    [
        (features.REASON_SIMILAR_TO, "Blue Ink", "Because you liked “Blue Ink”"),
        (features.REASON_TAIL_DISCOVERY, "Blue Ink", "A lesser-known find, related to “Blue Ink”"),
        (features.REASON_NEW_ITEM, "Blue Ink", "New in the shop, related to “Blue Ink”"),
        (features.REASON_NEW_ITEM, "", "New in the shop"),
        (features.REASON_POPULAR, "", "Popular right now"),
        ("sponsored", "", "Sponsored"),
        ("rule", "", "Featured by the shop"),
        ("from_the_future", "x", None),
        (None, "x", None),
    ],
)
def test_texts(code, title, text):
    assert reason_text(code, title) == text


def test_every_model_code_has_a_text():
    assert set(features.REASONS) <= set(CODES)
