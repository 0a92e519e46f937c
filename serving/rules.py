"""Business rules on the model's pool (issue 13 §2): boosts, buries, pinned and sponsored slots, exposure
floors; read from a rules file that is re-read when it changes.

The rules file is YAML (a `*.json` file is read as JSON), validated against `RULES_SCHEMA` (a JSON Schema):

    rules:
      - id: acme-week        # optional; default "<kind>#<n>", n = the rule's 1-based place in the file
        kind: boost          # boost | bury | pin | sponsored | floor
        brands: [acme]       # boost/bury match by any of item_ids / brands / categories (at least one)
        factor: 1.5          # boost: > 1; bury: in [0, 1), and 0 removes the item
        surfaces: [home]     # optional, any rule: only on these surfaces (default: every surface)
      - {kind: bury, categories: [clearance], factor: 0.5}
      - {kind: pin, item_id: i042, position: 1}   # 1-based: position 1 is the top of the list
      - {kind: sponsored, item_id: i007, position: 3}
      - {kind: floor, tail: 2, new: 1}            # at least 2 tail and 1 new item when the pool has them

No rules by default: no file, an empty file (or comments only) and `rules: []` all mean no rules, and the pool
passes through unchanged (cut to k). A file that does not parse or breaks the schema is refused with the line
and the reason (for a schema error also the field, as a path like `rules[1].factor`, 0-based as in JSON
Schema tools); the rules in force stay in force (`RulesFile.error` says why).

Per request, `RuleSet.apply(pool, k=, history=, surface=, lookup=)`, in this order:
  1. scope: the rules whose `surfaces` list the request's surface, or that name none.
  2. multipliers: each pool item's score times the product of the factors of the boost and bury rules that
     match it, applied away from or towards zero by the score's sign (s·f for s >= 0, s/f for s < 0: served
     scores are often negative, and a boost must raise an item whatever its sign). A product of 0 (a bury with
     factor 0) removes the item: not shown, not pinned, not swapped in by a floor.
  3. re-sort by the new score, stable (ties keep the model's order).
  4. pins and sponsored items, in file order, each take their position (sponsored ones flagged
     `sponsored`). A pool item moves there; another catalog item (`lookup`) is placed with no score. Skipped
     (see `Outcome.skipped`): a position past k or taken by an earlier rule, an item already placed, in the
     user's history, removed in step 2, or not in the catalog.
  5. fill: the other slots take the re-sorted pool, best first, minus the placed items.
  6. floors: while the list (placed items included) holds fewer tail (new) items than the largest `tail`
     (`new`) of the floor rules, the pool's best-scoring tail (new) item not shown replaces the lowest-ranked
     filled item that is not tail (new) and whose removal would not break the other floor; filled slots are
     then re-sorted by score. Best effort: a pool without enough such items leaves the list below the floor.
  7. cut to k: a pool too short to fill every slot closes up (k 10, a pin at position 8, 5 other items:
     it ends 6th).
Pools come from the model as returned: history items the model kept (the keep_history knob) stay.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from serving.catalog_metadata import ItemInfo
from trainer import features

logger = logging.getLogger(__name__)

BOOST, BURY, PIN, SPONSORED, FLOOR = "boost", "bury", "pin", "sponsored", "floor"
KINDS = (BOOST, BURY, PIN, SPONSORED, FLOOR)
MAX_FILE_BYTES = 1 << 20  # a rules file is a few hundred rules, not a catalog

_NAME = {"type": "string", "minLength": 1}
_NAMES = {"type": "array", "items": _NAME, "minItems": 1}
# The match fields are named like recommend's filter inputs: an item matches by id, brand or any category.
_MATCH = {features.ITEM_IDS: _NAMES, features.BRANDS: _NAMES, features.CATEGORIES: _NAMES}
_COUNT = {"type": "integer", "minimum": 0}
# A pin's or sponsored item's position is 1-based (features.SLOT, the log's, is 0-based).
_PLACE = {features.ITEM_ID: _NAME, "position": {"type": "integer", "minimum": 1}}


def _kind_schema(properties: dict, required: Sequence[str] = (), one_of: Sequence[str] = ()) -> dict:
    schema = {
        "type": "object",
        "properties": {"id": _NAME, "kind": {"enum": list(KINDS)}, "surfaces": _NAMES, **properties},
        "required": ["kind", *required],
        "additionalProperties": False,
    }
    if one_of:  # at least one of these fields
        schema["anyOf"] = [{"required": [name]} for name in one_of]
    return schema


RULES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$comment": "tailtower's serving rules: serving/rules.py",
    "type": "object",
    "properties": {"rules": {"type": ["array", "null"], "items": {"$ref": "#/$defs/rule"}}},
    "additionalProperties": False,
    "$defs": {
        "rule": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": list(KINDS)}},
            "allOf": [
                {
                    "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                    "then": {"$ref": f"#/$defs/{kind}"},
                }
                for kind in KINDS
            ],
        },
        BOOST: _kind_schema(
            {"factor": {"type": "number", "exclusiveMinimum": 1}, **_MATCH}, ["factor"], list(_MATCH)
        ),
        BURY: _kind_schema(
            {"factor": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, **_MATCH},
            ["factor"],
            list(_MATCH),
        ),
        PIN: _kind_schema(_PLACE, list(_PLACE)),
        SPONSORED: _kind_schema(_PLACE, list(_PLACE)),
        FLOOR: _kind_schema({"tail": _COUNT, "new": _COUNT}, one_of=["tail", "new"]),
    },
}


# ------------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Rule:
    id: str
    surfaces: frozenset[str] | None  # None: every surface

    def applies(self, surface: str) -> bool:
        return self.surfaces is None or surface in self.surfaces


@dataclass(frozen=True)
class Multiplier(Rule):
    """boost (factor > 1) or bury (factor in [0, 1); 0 removes)."""

    factor: float
    item_ids: frozenset[str]
    brands: frozenset[str]
    categories: frozenset[str]

    def matches(self, item_id: str, brand: str, categories: Sequence[str]) -> bool:
        return item_id in self.item_ids or brand in self.brands or not self.categories.isdisjoint(categories)


@dataclass(frozen=True)
class Placement(Rule):
    """pin or sponsored: `item_id` at `position` (1-based)."""

    item_id: str
    position: int
    sponsored: bool


@dataclass(frozen=True)
class Floor(Rule):
    tail: int
    new: int


# ------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class Candidate:
    """One item of the model's pool, as the model scored it."""

    item_id: str
    score: float
    is_tail: bool = False
    is_new: bool = False
    brand: str = ""
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placed:
    """One slot of the final list. `score` is what it was ranked by (the model's after multipliers), None for
    an item placed from outside the pool; `rules` are the ids of the rules that changed or placed it."""

    item_id: str
    score: float | None
    model_score: float | None
    is_tail: bool
    is_new: bool
    sponsored: bool = False
    rules: tuple[str, ...] = ()

    def by(self, rule_id: str, sponsored: bool | None = None) -> Placed:
        sponsored = self.sponsored if sponsored is None else sponsored
        return replace(self, rules=(*self.rules, rule_id), sponsored=sponsored)


@dataclass(frozen=True)
class Outcome:
    items: list[Placed]
    fired: list[str]  # ids of the rules that changed the pool or the list, in file order
    skipped: dict[str, str] = field(default_factory=dict)  # pin/sponsored rule id → why it placed nothing


Lookup = Callable[[str], ItemInfo | None]  # catalog item id → its metadata; None: not in the catalog


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    def __len__(self) -> int:
        return len(self.rules)

    def apply(
        self, pool: Sequence[Candidate], *, k: int, history: Sequence[str], surface: str, lookup: Lookup
    ) -> Outcome:
        """The final list of at most k items for `pool` (the model's candidates, best first); see the module
        docstring for the order of the steps."""
        active = [rule for rule in self.rules if rule.applies(surface)]
        multipliers = [rule for rule in active if isinstance(rule, Multiplier)]
        fired: set[str] = set()
        ranked, removed = _multiplied(pool, multipliers, fired)
        pool_items = {item.item_id: item for item in reversed(ranked)}  # the best of duplicates wins
        removals = [rule for rule in multipliers if rule.factor == 0]
        placement = _Placement(k, set(history), removed, removals, pool_items, lookup, fired)
        for rule in active:
            if isinstance(rule, Placement):
                placement.place(rule)
        free = max(k - len(placement.slots), 0)
        organic = _unique(item for item in ranked if item.item_id not in placement.ids)
        shown, rest = organic[:free], organic[free:]
        shown = _floors(shown, rest, list(placement.slots.values()), _needs(active), fired)
        return Outcome(
            _assemble(placement.slots, shown, k),
            [rule.id for rule in active if rule.id in fired],
            placement.skipped,
        )


NO_RULES = RuleSet()


def _scaled(score: float, factor: float) -> float:
    return score * factor if score >= 0 else score / factor


def _multiplied(
    pool: Sequence[Candidate], multipliers: list[Multiplier], fired: set[str]
) -> tuple[list[Placed], set[str]]:
    """Steps 2 and 3: the pool rescored and re-sorted, and the ids of the items a factor 0 removed."""
    ranked, removed = [], set()
    for item in pool:
        hits = [rule for rule in multipliers if rule.matches(item.item_id, item.brand, item.categories)]
        fired.update(rule.id for rule in hits)
        factor = math.prod(rule.factor for rule in hits)
        if factor == 0:
            removed.add(item.item_id)
            continue
        score = _scaled(item.score, factor)
        ids = tuple(rule.id for rule in hits)
        ranked.append(Placed(item.item_id, score, item.score, item.is_tail, item.is_new, rules=ids))
    ranked.sort(key=lambda item: -item.score)  # stable: ties keep the model's order
    return ranked, removed


@dataclass
class _Placement:
    """Step 4: pinned and sponsored items by 0-based slot (position - 1)."""

    k: int
    history: set[str]
    removed: set[str]
    removals: list[Multiplier]
    pool: dict[str, Placed]
    lookup: Lookup
    fired: set[str]
    slots: dict[int, Placed] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # placed item id → the rule that placed it
    skipped: dict[str, str] = field(default_factory=dict)

    def place(self, rule: Placement) -> None:
        item, why = self._item(rule)
        if item is None:
            self.skipped[rule.id] = why
            return
        self.slots[rule.position - 1] = item.by(rule.id, rule.sponsored)
        self.ids[rule.item_id] = rule.id
        self.fired.add(rule.id)

    def _item(self, rule: Placement) -> tuple[Placed | None, str]:
        slot, item_id = rule.position - 1, rule.item_id
        if slot >= self.k:
            return None, f"position {rule.position} is past k={self.k}"
        if slot in self.slots:
            return None, f"position {rule.position} is taken by {self.slots[slot].rules[-1]}"
        if item_id in self.ids:
            return None, f"{item_id} is already placed by {self.ids[item_id]}"
        if item_id in self.history:
            return None, f"{item_id} is in the user's history"
        if item_id in self.removed:
            return None, f"{item_id} is removed by a factor 0"
        if item_id in self.pool:
            return self.pool[item_id], ""
        info = self.lookup(item_id)
        if info is None:
            return None, f"{item_id} is not in the catalog"
        blocking = [rule.id for rule in self.removals if rule.matches(item_id, info.brand, info.categories)]
        if blocking:
            self.fired.update(blocking)
            return None, f"{item_id} is removed by {blocking[0]}"
        return Placed(item_id, None, None, info.is_tail, info.is_new), ""


def _unique(items: Iterator[Placed]) -> list[Placed]:
    seen: set[str] = set()
    return [item for item in items if not (item.item_id in seen or seen.add(item.item_id))]


_FLAGS = (features.IS_TAIL, features.IS_NEW)  # Placed's fields that Floor.tail and Floor.new count


def _needs(rules: list[Rule]) -> dict[str, tuple[int, str]]:
    """flag → (the largest floor of the active rules, the first rule that asks for it)."""
    needs: dict[str, tuple[int, str]] = {}
    for rule in rules:
        if isinstance(rule, Floor):
            for flag, n in zip(_FLAGS, (rule.tail, rule.new), strict=True):
                if n > needs.get(flag, (0, ""))[0]:
                    needs[flag] = (n, rule.id)
    return needs


def _floors(
    shown: list[Placed],
    rest: list[Placed],
    placed: list[Placed],
    needs: dict[str, tuple[int, str]],
    fired: set[str],
) -> list[Placed]:
    """Step 6: swaps the best of `rest` with each flag into `shown` until every floor holds or nothing is
    left to swap; `shown` (filled slots) comes back sorted by score."""
    shown, rest = list(shown), list(rest)

    def count(flag: str) -> int:
        return sum(getattr(item, flag) for item in (*shown, *placed))

    def removable(item: Placed, flag: str) -> bool:
        if getattr(item, flag):
            return False
        return all(not getattr(item, other) or count(other) > n for other, (n, _) in needs.items())

    for flag, (n, rule_id) in needs.items():
        while count(flag) < n:
            incoming = next((item for item in rest if getattr(item, flag)), None)
            victim = next((item for item in reversed(shown) if removable(item, flag)), None)
            if incoming is None or victim is None:
                break
            rest.remove(incoming)
            shown.remove(victim)
            shown.append(incoming.by(rule_id))
            rest.append(victim)
            rest.sort(key=lambda item: -item.score)
            fired.add(rule_id)
    shown.sort(key=lambda item: -item.score)
    return shown


def _assemble(slots: dict[int, Placed], shown: list[Placed], k: int) -> list[Placed]:
    """Step 7: placed items at their slots, the filled ones in order around them; a short list closes up."""
    filled = iter(shown)
    items = [slots.get(slot) or next(filled, None) for slot in range(k)]
    return [item for item in items if item is not None]


# ------------------------------------------------------------------------------------------ the file
class RulesError(ValueError):
    """A rules file refused: `line` (1-based) and `path` (e.g. "rules[1].factor") where known."""

    def __init__(self, source: str, reason: str, line: int | None = None, path: str | None = None):
        self.source, self.reason, self.line, self.path = source, reason, line, path
        where = source + (f", line {line}" if line else "")
        super().__init__(f"{where}: {path + ': ' if path else ''}{reason}")


def parse_rules(text: str, source: str = "<rules>", syntax: str = "yaml") -> RuleSet:
    """The rules in `text` (syntax "yaml" or "json"); raises RulesError naming the line and field."""
    if not text.strip():
        return NO_RULES
    doc = _parsed(text, source, syntax)
    if doc is None:  # comments only
        return NO_RULES
    error = next(_errors(doc, RULES_SCHEMA, ()), None)
    if error is not None:
        path, reason = error
        raise RulesError(source, reason, _line(text, path), _path_text(path))
    rules = tuple(_rule(spec, n) for n, spec in enumerate(doc.get("rules") or (), start=1))
    seen: dict[str, int] = {}
    for n, rule in enumerate(rules):
        if rule.id in seen:
            path = ("rules", n, "id") if "id" in doc["rules"][n] else ("rules", n)
            reason = f"duplicate rule id {rule.id!r} (also rules[{seen[rule.id]}])"
            raise RulesError(source, reason, _line(text, path), _path_text(path))
        seen[rule.id] = n
    return RuleSet(rules)


def _parsed(text: str, source: str, syntax: str) -> Any:
    if syntax == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RulesError(source, f"not JSON: {e.msg}", e.lineno) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = " ".join(part for part in (e.context, e.problem) if part)
        raise RulesError(source, f"not YAML: {reason}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise RulesError(source, f"not YAML: {e}") from None


def _rule(spec: dict, n: int) -> Rule:
    kind = spec["kind"]
    surfaces = spec.get("surfaces")
    surfaces = None if surfaces is None else frozenset(surfaces)
    common = {"id": spec.get("id", f"{kind}#{n}"), "surfaces": surfaces}
    if kind in (BOOST, BURY):
        ids, brands, categories = (frozenset(spec.get(name, ())) for name in _MATCH)
        return Multiplier(
            **common, factor=float(spec["factor"]), item_ids=ids, brands=brands, categories=categories
        )
    if kind in (PIN, SPONSORED):
        item_id, position = (spec[name] for name in _PLACE)
        return Placement(**common, item_id=item_id, position=position, sponsored=kind == SPONSORED)
    return Floor(**common, tail=spec.get("tail", 0), new=spec.get("new", 0))


# The JSON Schema keywords RULES_SCHEMA uses, checked by hand (`jsonschema` is not in the environment).
_TYPES = {
    "object": ("a mapping", lambda v: isinstance(v, dict)),
    "array": ("a list", lambda v: isinstance(v, list)),
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": (
        "a number",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    ),
    "null": ("empty", lambda v: v is None),
}
_BOUNDS = {
    "minimum": (">=", lambda v, b: v >= b),
    "exclusiveMinimum": (">", lambda v, b: v > b),
    "maximum": ("<=", lambda v, b: v <= b),
    "exclusiveMaximum": ("<", lambda v, b: v < b),
}

Path = tuple[str | int, ...]


def _errors(value: Any, schema: dict, path: Path) -> Iterator[tuple[Path, str]]:
    """(path, reason) of each way `value` breaks `schema`, outermost first."""
    if "$ref" in schema:
        yield from _errors(value, RULES_SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], path)
    types = schema.get("type", ())
    types = [types] if isinstance(types, str) else types
    if types and not any(_TYPES[name][1](value) for name in types):
        yield path, f"must be {' or '.join(_TYPES[name][0] for name in types)}, got {value!r}"
        return
    if "enum" in schema and value not in schema["enum"]:
        yield path, f"must be one of {', '.join(map(str, schema['enum']))}, got {value!r}"
    if "const" in schema and value != schema["const"]:
        yield path, f"must be {schema['const']!r}, got {value!r}"
    for keyword, (sign, holds) in _BOUNDS.items():
        if keyword in schema and not holds(value, schema[keyword]):
            yield path, f"must be {sign} {schema[keyword]}, got {value!r}"
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield path, "must not be empty"
    if isinstance(value, dict):
        yield from _object_errors(value, schema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            yield path, f"must list at least {schema['minItems']} item(s)"
        for n, item in enumerate(value):
            yield from _errors(item, schema.get("items", {}), (*path, n))
    if "anyOf" in schema and not any(_valid(value, option) for option in schema["anyOf"]):
        names = [name for option in schema["anyOf"] for name in option.get("required", ())]
        yield path, f"needs at least one of the fields {', '.join(names)}"
    for option in schema.get("allOf", ()):
        yield from _errors(value, option, path)
    if "if" in schema and _valid(value, schema["if"]):
        yield from _errors(value, schema["then"], path)


def _object_errors(value: dict, schema: dict, path: Path) -> Iterator[tuple[Path, str]]:
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:  # first: a misspelt field also reads as a missing one
        for key in value:
            if key not in properties:
                yield (*path, key), f"unknown field (known: {', '.join(properties)})"
    for name in schema.get("required", ()):
        if name not in value:
            yield path, f"missing field {name!r}"
    for key, item in value.items():
        if key in properties:
            yield from _errors(item, properties[key], (*path, key))


def _valid(value: Any, schema: dict) -> bool:
    return next(_errors(value, schema, ()), None) is None


def _path_text(path: Path) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.lstrip(".") or "(top level)"


def _line(text: str, path: Path) -> int | None:
    """The 1-based line of `path` in `text` (of its key for a field), or of its deepest parent found; None
    where the text does not compose as YAML (JSON indented with tabs)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    at = node
    for part in path:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            at = node = node.value[part]
        elif isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                break
            at, node = pair
        else:
            break
    return at.start_mark.line + 1 if at is not None else None


class RulesFile:
    """The rules of the file at `path` in force: `current()` stats the file (about a microsecond) and re-reads
    it when its mtime, size or inode changed. A file that is refused leaves the rules in force as they were,
    logs a warning and sets `error` until a good file (or none) replaces it. A missing file (or `path` None)
    is no rules. Thread-safe."""

    def __init__(self, path: str | None):
        self.path = path
        self.error: str | None = None  # why the file on disk is not in force; None when it is
        self._rules = NO_RULES
        self._signature: tuple | None = None  # the stat of the file last read; () for no file
        self._lock = threading.Lock()
        self.poll()

    @property
    def rules(self) -> RuleSet:
        """The rules in force, without looking at the file."""
        return self._rules

    def current(self) -> RuleSet:
        """The rules in force, after re-reading the file if it changed."""
        self.poll()
        return self._rules

    def poll(self) -> bool:
        """Re-reads the file if it changed; True when that put new rules in force."""
        if self._stat() == self._signature:
            return False
        with self._lock:
            signature = self._stat()
            if signature == self._signature:
                return False
            self._signature = signature
            return self._load(signature)

    def status(self) -> dict:
        """For /readyz and /metrics: the file, how many rules are in force, and why the file is refused."""
        return {"path": self.path, "rules": len(self._rules), "error": self.error}

    def _stat(self) -> tuple:
        if not self.path:
            return ()
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return ()
        except OSError as e:  # unreadable: _read fails the same way and the file is refused
            return ("unreadable", e.errno)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _load(self, signature: tuple) -> bool:
        try:
            rules = self._read() if signature else NO_RULES
        except (OSError, UnicodeDecodeError, RulesError) as e:
            self.error = str(e)
            logger.warning("rules file refused, the %d rules in force stay: %s", len(self._rules), e)
            return False
        self._rules, self.error = rules, None
        if signature:
            logger.info("rules file %s: %d rules in force", self.path, len(rules))
        else:  # say where the service looks, so a merchant knows where to put one
            logger.info("no rules file%s: no rules in force", f" at {self.path}" if self.path else "")
        return True

    def _read(self) -> RuleSet:
        with open(self.path, encoding="utf-8") as f:
            text = f.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise RulesError(self.path, f"larger than {MAX_FILE_BYTES} bytes")
        syntax = "json" if self.path.endswith(".json") else "yaml"
        return parse_rules(text, self.path, syntax)
