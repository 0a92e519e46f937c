"""A short, human-readable reason for every item the service answers with.

The model explains its own picks (`recommend`'s `because` and `reason` outputs, trainer/features.py REASONS);
the service adds the business rules' codes and turns a code plus the supporting item's title into text:

  code            text
  similar_to      Because you liked “<title of because>”
  tail_discovery  A lesser-known find, related to “<title of because>”
  new_item        New in the shop[, related to “<title of because>”]
  popular         Popular right now
  sponsored       Sponsored                       (placed by a sponsored rule)
  rule            Featured by the shop            (placed by a pin from outside the model's list)
A model exported before the explanations gives no code: reason null.
"""

from __future__ import annotations

from trainer import features

SPONSORED_REASON, RULE_REASON = "sponsored", "rule"  # the service's codes, beside the model's REASONS
_TEMPLATES = {
    features.REASON_SIMILAR_TO: "Because you liked “{title}”",
    features.REASON_TAIL_DISCOVERY: "A lesser-known find, related to “{title}”",
    features.REASON_NEW_ITEM: "New in the shop",
    features.REASON_POPULAR: "Popular right now",
    SPONSORED_REASON: "Sponsored",
    RULE_REASON: "Featured by the shop",
}
CODES = tuple(_TEMPLATES)


def reason_code(model_code: str, sponsored: bool, placed_by_rule: bool) -> str | None:
    """The code shown: a rule's placement first, then the model's ("" from an older model: None)."""
    if sponsored:
        return SPONSORED_REASON
    if placed_by_rule:
        return RULE_REASON
    return model_code or None


def reason_text(code: str | None, because_title: str) -> str | None:
    """The text of `code`; `because_title` is the supporting history item's title (or its id)."""
    if code is None:
        return None
    text = _TEMPLATES.get(code)
    if text is None:  # a code from a newer model than this service knows
        return None
    if code == features.REASON_NEW_ITEM and because_title:
        return f"{text}, related to “{because_title}”"
    return text.format(title=because_title)
