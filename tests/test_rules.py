"""The service's business rules (serving/rules.py) on constructed pools: each rule kind, their order, the
history and catalog guards, floors that cannot be met, surface scoping; the rules file: schema errors with
line and field, refused files keeping the rules in force, hot reload, no file = no rules."""

import json
import logging
import os
import textwrap

import pytest

from serving.catalog_metadata import ItemInfo
from serving.rules import (
    NO_RULES,
    Candidate,
    Floor,
    Multiplier,
    Outcome,
    Placed,
    RulesError,
    RulesFile,
    parse_rules,
)

CATALOG = {
    "promo": ItemInfo("promo", brand="acme", categories=("pens",)),
    "ad": ItemInfo("ad", is_new=True),
    "old": ItemInfo("old"),
    "banned": ItemInfo("banned", brand="shady"),
}
HEAD = [Candidate(f"h{n}", 1.0 - n / 10) for n in range(1, 6)]  # h1 0.9 … h5 0.5


def rules(text: str):
    return parse_rules(textwrap.dedent(text))


def apply(text: str, pool, k: int = 5, history=(), surface: str = "home") -> Outcome:
    return rules(text).apply(pool, k=k, history=list(history), surface=surface, lookup=CATALOG.get)


def ids(outcome: Outcome) -> list[str]:
    return [item.item_id for item in outcome.items]


def tail(item_id: str, score: float, **fields) -> Candidate:
    return Candidate(item_id, score, is_tail=True, **fields)


@pytest.mark.parametrize("text", ["", "  \n", "# nothing yet\n", "rules: []\n", "rules:\n"])
def test_no_rules_pass_the_pool_through_cut_to_k(text):
    outcome = apply(text, HEAD, k=3)
    assert outcome == NO_RULES.apply(HEAD, k=3, history=[], surface="home", lookup=CATALOG.get)
    assert outcome.items == [Placed(c.item_id, c.score, c.score, False, False) for c in HEAD[:3]]
    assert outcome.fired == [] and outcome.skipped == {}


def test_boost_and_bury_by_item_brand_and_category_raise_and_lower_negative_scores_too():
    pool = [
        Candidate("a", -0.1),
        Candidate("b", -0.2, brand="acme"),
        Candidate("c", -0.3, categories=("office", "pens")),
        Candidate("d", 0.0),
        Candidate("e", 0.4, brand="acme"),
    ]
    outcome = apply(
        """
        rules:
          - {kind: bury, item_ids: [a], factor: 0.5}
          - {id: acme, kind: boost, brands: [acme], factor: 4}
          - {kind: boost, categories: [pens, toys], factor: 10}
          - {kind: boost, item_ids: [zzz], factor: 2}
        """,
        pool,
    )
    # s·f for s >= 0, s/f below 0: a boost raises, a bury lowers, whatever the sign.
    assert [(p.item_id, p.score, p.model_score) for p in outcome.items] == [
        ("e", 1.6, 0.4),
        ("d", 0.0, 0.0),
        ("c", pytest.approx(-0.03), -0.3),
        ("b", -0.05, -0.2),
        ("a", -0.2, -0.1),
    ]
    assert [p.rules for p in outcome.items] == [("acme",), (), ("boost#3",), ("acme",), ("bury#1",)]
    assert outcome.fired == ["bury#1", "acme", "boost#3"]  # boost#4 matched nothing


def test_factors_multiply_and_a_bury_factor_0_removes_the_item_everywhere():
    pool = [Candidate("a", 0.9, brand="acme"), Candidate("b", 0.8, brand="shady"), tail("t", 0.1)]
    outcome = apply(
        """
        rules:
          - {kind: boost, brands: [acme], factor: 2}
          - {kind: bury, item_ids: [a], factor: 0.5}
          - {kind: bury, brands: [shady], factor: 0}
          - {kind: pin, item_id: b, position: 1}
          - {kind: sponsored, item_id: banned, position: 2}
          - {kind: floor, tail: 3}
        """,
        pool,
    )
    assert [(p.item_id, p.score, p.rules) for p in outcome.items] == [
        ("a", 0.9, ("boost#1", "bury#2")),
        ("t", 0.1, ()),  # one tail item already: the floor has nothing to swap in, no error
    ]
    assert outcome.skipped == {
        "pin#4": "b is removed by a factor 0",
        "sponsored#5": "banned is removed by bury#3",
    }
    assert outcome.fired == ["boost#1", "bury#2", "bury#3"]


def test_pins_and_sponsored_items_take_their_1_based_positions_the_rest_fill_in_score_order():
    outcome = apply(
        """
        rules:
          - {kind: pin, item_id: h4, position: 1}
          - {kind: sponsored, item_id: ad, position: 3}
          - {kind: pin, item_id: promo, position: 5}
        """,
        HEAD,
    )
    assert outcome.items == [
        Placed("h4", 0.6, 0.6, False, False, rules=("pin#1",)),  # from the pool, with its score
        Placed("h1", 0.9, 0.9, False, False),
        Placed("ad", None, None, False, True, sponsored=True, rules=("sponsored#2",)),  # from the catalog
        Placed("h2", 0.8, 0.8, False, False),
        Placed("promo", None, None, False, False, rules=("pin#3",)),
    ]
    assert outcome.fired == ["pin#1", "sponsored#2", "pin#3"]


def test_a_pin_never_shows_history_unknown_items_twice_or_past_k_and_the_first_rule_keeps_a_position():
    outcome = apply(
        """
        rules:
          - {kind: pin, item_id: old, position: 1}
          - {kind: pin, item_id: nowhere, position: 1}
          - {kind: pin, item_id: promo, position: 2}
          - {kind: sponsored, item_id: ad, position: 2}
          - {kind: sponsored, item_id: promo, position: 3}
          - {kind: pin, item_id: ad, position: 4}
          - {kind: pin, item_id: h1, position: 9}
        """,
        HEAD,
        k=4,
        history=["old"],
    )
    assert ids(outcome) == ["h1", "promo", "h2", "ad"]
    assert outcome.skipped == {
        "pin#1": "old is in the user's history",
        "pin#2": "nowhere is not in the catalog",
        "sponsored#4": "position 2 is taken by pin#3",
        "sponsored#5": "promo is already placed by pin#3",
        "pin#7": "position 9 is past k=4",
    }
    assert outcome.fired == ["pin#3", "pin#6"]
    assert not any(item.sponsored for item in outcome.items)


def test_a_short_pool_closes_up_around_pins():
    outcome = apply("rules: [{kind: pin, item_id: promo, position: 5}]", HEAD[:2], k=5)
    assert ids(outcome) == ["h1", "h2", "promo"]


def test_the_floor_swaps_the_best_tail_items_for_the_lowest_non_pinned_others():
    pool = [*HEAD, tail("t1", 0.3), tail("t2", 0.2), tail("t3", 0.1)]
    outcome = apply(
        """
        rules:
          - {kind: pin, item_id: h5, position: 4}
          - {kind: floor, tail: 2}
        """,
        pool,
        k=4,
    )
    # h5 is pinned at the bottom: the floor takes the places of h3 and h2, and filled slots stay by score.
    assert ids(outcome) == ["h1", "t1", "t2", "h5"]
    assert [p.rules for p in outcome.items] == [(), ("floor#2",), ("floor#2",), ("pin#1",)]
    assert outcome.fired == ["pin#1", "floor#2"]


def test_placed_tail_items_count_for_the_floor_and_the_largest_floor_wins():
    pool = [*HEAD, tail("t1", 0.3), tail("t2", 0.2)]
    outcome = apply(
        """
        rules:
          - {kind: floor, tail: 1}
          - {kind: pin, item_id: t2, position: 1}
          - {kind: floor, tail: 2}
        """,
        pool,
        k=3,
    )
    assert ids(outcome) == ["t2", "h1", "t1"]
    assert outcome.fired == ["pin#2", "floor#3"]


def test_a_new_items_floor_does_not_break_the_tail_floor():
    pool = [Candidate("h1", 0.9), tail("t1", 0.8), Candidate("n1", 0.1, is_new=True)]
    outcome = apply("rules: [{kind: floor, tail: 1, new: 1}]", pool, k=2)
    assert ids(outcome) == ["t1", "n1"]  # h1 goes, not t1, the only tail item


def test_a_pool_without_tail_items_leaves_the_floor_unmet_without_error():
    outcome = apply("rules: [{kind: floor, tail: 2}]", HEAD, k=3)
    assert ids(outcome) == ["h1", "h2", "h3"] and outcome.fired == []


def test_the_order_is_multipliers_then_pins_then_floor():
    pool = [*HEAD, tail("t1", 0.2), tail("t2", 0.1, brand="acme")]
    outcome = apply(
        """
        rules:
          - {kind: floor, tail: 1}
          - {kind: pin, item_id: h1, position: 3}
          - {kind: boost, brands: [acme], factor: 5}
          - {kind: bury, item_ids: [h2], factor: 0.1}
        """,
        pool,
        k=3,
    )
    # boost: t2 0.5 ranks above t1 (so the floor takes it); bury: h2 0.08 drops out; h1 pinned at 3.
    assert [(p.item_id, p.score, p.rules) for p in outcome.items] == [
        ("h3", 0.7, ()),
        ("t2", 0.5, ("boost#3", "floor#1")),
        ("h1", 0.9, ("pin#2",)),
    ]
    assert outcome.fired == ["floor#1", "pin#2", "boost#3", "bury#4"]


def test_rules_scoped_to_surfaces_apply_only_there():
    text = """
        rules:
          - {kind: pin, item_id: promo, position: 1, surfaces: [home]}
          - {kind: pin, item_id: ad, position: 2, surfaces: [cart, pdp]}
          - {kind: bury, item_ids: [h1], factor: 0}
        """
    assert ids(apply(text, HEAD, k=3, surface="home")) == ["promo", "h2", "h3"]
    assert ids(apply(text, HEAD, k=3, surface="pdp")) == ["h2", "ad", "h3"]
    assert ids(apply(text, HEAD, k=3, surface="default")) == ["h2", "h3", "h4"]


def test_rule_ids_are_given_or_derived_from_kind_and_place():
    parsed = rules(
        """
        rules:
          - {kind: boost, item_ids: [a], factor: 1.5, surfaces: [home]}
          - {id: tail-floor, kind: floor, new: 2}
        """
    )
    assert parsed.rules == (
        Multiplier("boost#1", frozenset({"home"}), 1.5, frozenset({"a"}), frozenset(), frozenset()),
        Floor("tail-floor", None, 0, 2),
    )


@pytest.mark.parametrize(
    "text, line, path, reason",
    [
        ("rules:\n  - {kind: pin, item_id: a, position: 1\n", 3, None, "not YAML"),
        ("rules:\n  - kind: pin\n    item_id: a\n   position: 1\n", 4, None, "not YAML"),
        (
            "rules:\n  - kind: boost\n    item_ids: [a]\n    factor: 0.5\n",
            4,
            "rules[0].factor",
            "must be > 1, got 0.5",
        ),
        (
            "rules:\n  - kind: bury\n    item_ids: [a]\n    factor: 1\n",
            4,
            "rules[0].factor",
            "must be < 1, got 1",
        ),
        (
            "rules:\n  - kind: pin\n    item_id: a\n    position: 0\n",
            4,
            "rules[0].position",
            "must be >= 1, got 0",
        ),
        (
            "rules:\n  - kind: pin\n    item_id: a\n    position: 1.0\n",
            4,
            "rules[0].position",
            "must be an integer",
        ),
        ("rules:\n  - kind: pin\n    item_id: a\n", 2, "rules[0]", "missing field 'position'"),
        (
            "rules:\n  - kind: pin\n    item_id: a\n    position: 1\n    psition: 2\n",
            5,
            "rules[0].psition",
            "unknown field (known: id, kind, surfaces, item_id, position)",
        ),
        (  # a misspelt required field is named where it is, not only as the missing one
            "rules:\n  - kind: boost\n    brands: [a]\n    factr: 1.5\n",
            4,
            "rules[0].factr",
            "unknown field (known: id, kind, surfaces, factor, item_ids, brands, categories)",
        ),
        ("rules:\n  - {kind: floor}\n", 2, "rules[0]", "needs at least one of the fields tail, new"),
        (
            "rules:\n  - {kind: boost, factor: 2}\n",
            2,
            "rules[0]",
            "needs at least one of the fields item_ids, brands, categories",
        ),
        (
            "rules:\n  - kind: boots\n",
            2,
            "rules[0].kind",
            "must be one of boost, bury, pin, sponsored, floor",
        ),
        ("rules:\n  - factor: 2\n", 2, "rules[0]", "missing field 'kind'"),
        ("rules:\n  - {kind: bury, brands: [no], factor: 0}\n", 2, "rules[0].brands[0]", "must be a string"),
        (
            "rules:\n  - {kind: floor, new: 1, surfaces: []}\n",
            2,
            "rules[0].surfaces",
            "must list at least 1 item(s)",
        ),
        ("- {kind: floor, new: 1}\n", 1, "(top level)", "must be a mapping"),
        ("rulez: []\n", 1, "rulez", "unknown field (known: rules)"),
        (
            "rules:\n  - {kind: floor, new: 1}\n  - {id: floor#1, kind: floor, tail: 1}\n",
            3,
            "rules[1].id",
            "duplicate rule id 'floor#1' (also rules[0])",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_field_and_reason(text, line, path, reason):
    with pytest.raises(RulesError) as raised:
        parse_rules(text, "rules.yaml")
    error = raised.value
    assert (error.line, error.path) == (line, path)
    assert reason in error.reason
    assert str(error).startswith(f"rules.yaml, line {line}: ")


def test_a_json_file_is_read_as_json_with_lines_for_its_errors():
    doc = {
        "rules": [
            {"kind": "pin", "item_id": "a", "position": 1},
            {"kind": "boost", "item_ids": ["b"], "factor": 2},
        ]
    }
    assert len(parse_rules(json.dumps(doc, indent="\t"), syntax="json")) == 2  # tabs: JSON, not YAML
    doc["rules"][1]["factor"] = 1
    with pytest.raises(RulesError) as raised:
        parse_rules(json.dumps(doc, indent=2), "rules.json", syntax="json")
    assert (raised.value.line, raised.value.path) == (13, "rules[1].factor")
    with pytest.raises(RulesError) as raised:
        parse_rules('{"rules": [\n  {"kind": "pin",}\n]}', "rules.json", syntax="json")
    assert raised.value.line == 2 and "not JSON" in raised.value.reason


# ------------------------------------------------------------------------------------------ RulesFile
GOOD = "rules:\n  - {kind: pin, item_id: promo, position: 1}\n"
BETTER = "rules:\n  - {kind: pin, item_id: promo, position: 1}\n  - {kind: floor, tail: 1}\n"


def write(path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_a_missing_file_or_none_is_no_rules(tmp_path):
    for path in (None, str(tmp_path / "rules.yaml")):
        rules_file = RulesFile(path)
        assert rules_file.current() is NO_RULES
        assert rules_file.status() == {"path": path, "rules": 0, "error": None}


def test_the_file_is_re_read_when_it_changes_and_a_refused_one_keeps_the_rules_in_force(tmp_path, caplog):
    path = tmp_path / "rules.yaml"
    write(path, GOOD)
    rules_file = RulesFile(str(path))
    assert len(rules_file.current()) == 1
    assert rules_file.poll() is False  # unchanged: not read again

    write(path, BETTER)
    assert len(rules_file.current()) == 2 and rules_file.error is None

    with caplog.at_level(logging.WARNING, logger="serving.rules"):
        write(path, BETTER + "  - {kind: floor, tail: -1}\n")
        assert len(rules_file.current()) == 2  # the previous rules stay
    assert rules_file.error == f"{path}, line 4: rules[2].tail: must be >= 0, got -1"
    assert rules_file.status()["error"] == rules_file.error
    assert "the 2 rules in force stay" in caplog.text and "rules[2].tail" in caplog.text

    write(path, "rules: [\n")
    assert len(rules_file.current()) == 2 and "line 2" in rules_file.error and "not YAML" in rules_file.error

    write(path, GOOD)
    assert len(rules_file.current()) == 1 and rules_file.error is None

    os.remove(path)
    assert rules_file.current() is NO_RULES and rules_file.error is None


def test_a_change_that_keeps_the_size_is_seen_by_its_mtime(tmp_path):
    path = tmp_path / "rules.yaml"
    write(path, "rules: [{kind: pin, item_id: aaaa, position: 1}]\n")
    rules_file = RulesFile(str(path))
    stat = os.stat(path)
    write(path, "rules: [{kind: pin, item_id: bbbb, position: 1}]\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert rules_file.current().rules[0].item_id == "bbbb"


def test_a_json_rules_file_and_an_oversized_one(tmp_path, monkeypatch):
    path = tmp_path / "rules.json"
    write(path, json.dumps({"rules": [{"kind": "floor", "new": 1}]}, indent="\t"))
    rules_file = RulesFile(str(path))
    assert rules_file.current().rules == (Floor("floor#1", None, 0, 1),)
    monkeypatch.setattr("serving.rules.MAX_FILE_BYTES", 10)
    write(path, json.dumps({"rules": []}, indent=4))
    assert len(rules_file.current()) == 1 and "larger than 10 bytes" in rules_file.error
