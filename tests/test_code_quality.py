"""One owner for every value, checked over the project's source with `ast` (the code is never imported).

In the spirit of torchrec's `test_code_quality.py`: rules a reviewer would otherwise have to remember, over
setup.py, components/, pipeline/, trainer/, evaluation/ and serving/ (not tests/).

1. Feature keys. The module-level string constants of trainer/features.py (feature, signature, input,
   output, vocabulary-file and custom_config names) are written there only; everyone else uses the
   constant. Checked: every string literal that is code. Not checked: docstrings and other bare string
   statements, and the literal parts of f-strings (never a whole key). Short keys ("k") are checked like
   the others; a literal that equals a key because another interface uses the same word (the dataset
   files' column names, TFX's "examples" channel, TFMA's `k` argument) is allow-listed per file, with the
   reason, in `FEATURE_KEY_ALLOWED`.

2. Config defaults. The defaults of the config dataclasses (every `@dataclass` named `*Config`, and the
   harness's `Options`) are written once. A default given as a name (`bert: str = DEFAULT_BERT`,
   `features.HISTORY_LENGTH`) is followed through assignments and imports to the literal it ends at: that
   literal is the default's owner. A restatement is then
   - a string default of 4+ characters written elsewhere as a module constant, a class attribute, a
     parameter default or a flag's `default=` (also as the last part of a path, "/opt/x/<default>");
   - any other default, except 0, 1, True, False, None and "", written as the default of a parameter or a
     flag named like the field, or as a module constant named like it in upper case (`RERANK_POOL = 100`
     for `rerank_pool`). Floats are matched by name only: 0.1 or 0.05 are the defaults of unrelated
     settings too. A one-letter field (`Options.k`) is matched in its own module only: `k` names a list
     length in every client;
   - the same field name with the same default written as two literals in two config classes
     (`TrainerConfig.bert` and `Options.bert`): one of them must derive from the other.
   Coincidences are allow-listed in `DEFAULT_ALLOWED` by file and name, with the reason.

3. Endpoints. "<host>:<port>" of serving/config.py's DEFAULT_HOST (or "localhost") and one of its `*_PORT`
   constants (or service_config.py's) is written in serving/config.py only: a default endpoint elsewhere is
   built from the constants (`DEFAULT_GRPC_TARGET`). Checked: string literals that are code, as in 1.

The checkers take the source root, so they run unchanged against another checkout:
  python -c "from tests.test_code_quality import *; print(*restated_defaults('/path/to/checkout'), sep='\\n')"
"""

from __future__ import annotations

import ast
import functools
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "components", "pipeline", "trainer", "evaluation", "serving")
FEATURES_FILE = "trainer/features.py"

# The dataset files' column names (components/data_files.py, README "Bring your own data"): a public input
# format of its own, whose columns happen to share the raw features' names.
_ITEM_COLUMNS = ("item_id", "title", "text", "brand", "categories", "price")
_EXAMPLES_CHANNEL = "InteractionsExampleGen's output channel `examples` (a TFX artifact name), not the input"

# file → (literals, why they are not the feature keys they equal there)
FEATURE_KEY_ALLOWED: dict[str, tuple[tuple[str, ...], str]] = {
    "components/data_files.py": (("user_id", *_ITEM_COLUMNS), "parses the dataset files' columns"),
    "pipeline/demo/synthetic_data.py": (
        (*_ITEM_COLUMNS, "label"),
        "writes items.jsonl; 'label' is a product noun of the generated titles",
    ),
    "evaluation/pipeline_run.py": (_ITEM_COLUMNS, "writes a dataset's items.jsonl"),
    "evaluation/data.py": (("item_id",), "a value of the harness's --time-ties flag"),
    "evaluation/harness.py": (("history",), "a key of metrics.json's settings: the history a baseline reads"),
    "evaluation/report.py": (("k",), "a field of metrics.json (a public output)"),
    "pipeline/eval_config.py": (("k",), "TFMA passes a metric's config as keywords: RecallAtK(k=...)"),
    "components/example_gen.py": (("examples",), _EXAMPLES_CHANNEL),
    "components/data_report.py": (("examples",), "a key of ExampleGen's summary.json: examples per split"),
    "pipeline/pipeline.py": (("examples",), _EXAMPLES_CHANNEL),
    "pipeline/runs/results.py": (("examples",), _EXAMPLES_CHANNEL),
}

CONFIG_CLASS_SUFFIX = "Config"
CONFIG_CLASSES = ("Options",)  # evaluation/harness.py's command-line options
TRIVIAL = (None, True, False, 0, 1, "")  # defaults too common to mean a restatement (0.0 == 0, 1.0 == 1)
# (file, constant / parameter / flag name) → why its value equals a config default by coincidence
DEFAULT_ALLOWED: dict[tuple[str, str], str] = {
    ("pipeline/configs.py", "PIPELINE_NAME"): "the pipeline's name in ML Metadata, not the served model's",
    ("evaluation/harness.py", "OUR_SYSTEM"): "our system's label in the harness's report",
    ("pipeline/kubeflow_runner.py", "run_root"): "a placeholder bucket folder named after the project",
}


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    message: str
    subject: str = ""  # the literal (feature keys) or the name (defaults) that broke the rule

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def python_files(root: pathlib.Path | str) -> tuple[tuple[str, ast.Module], ...]:
    """(path relative to root, parsed module) of every source file, tests excluded."""
    return _parsed(pathlib.Path(root).resolve())


@functools.cache
def _parsed(root: pathlib.Path) -> tuple[tuple[str, ast.Module], ...]:
    files = []
    for entry in SOURCES:
        paths = [root / entry] if entry.endswith(".py") else sorted((root / entry).rglob("*.py"))
        for path in paths:
            if path.is_file():
                files.append((path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"))))
    return tuple(files)


# ------------------------------------------------------------------------------------------ feature keys
def feature_keys(root: pathlib.Path | str) -> dict[str, str]:
    """value → name of trainer/features.py's module-level string constants."""
    tree = ast.parse((pathlib.Path(root) / FEATURES_FILE).read_text(encoding="utf-8"))
    keys: dict[str, str] = {}
    for node in tree.body:
        for name, value in _assignments(node):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                keys.setdefault(value.value, name)
    return keys


def _not_code(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are not code: bare string statements (docstrings) and f-string parts."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            skipped.update(id(part) for part in node.values)
    return skipped


def feature_key_literals(
    root: pathlib.Path | str, allowed: dict[str, tuple[tuple[str, ...], str]] | None = None
) -> list[Violation]:
    """String literals equal to a trainer.features key outside features.py (`allowed` entries excepted)."""
    keys = feature_keys(root)
    allowed = FEATURE_KEY_ALLOWED if allowed is None else allowed
    found = []
    for path, tree in python_files(root):
        exempt = set(allowed.get(path, ((), ""))[0])
        skipped = _not_code(tree)
        for node in ast.walk(tree):
            if (
                path != FEATURES_FILE
                and isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in keys
                and node.value not in exempt
                and id(node) not in skipped
            ):
                message = f"{node.value!r} is features.{keys[node.value]}"
                found.append(Violation(path, node.lineno, message, node.value))
    return sorted(found)


# ------------------------------------------------------------------------------------------ config defaults
Site = tuple[str, int]  # (path, line) where a literal is written
_NOT_LITERAL = object()


@dataclass(frozen=True)
class _Literal:
    """A literal written where a default could be restated, and the name it is the value of."""

    path: str
    line: int
    name: str
    value: object
    kind: str  # "constant", "attribute", "parameter" or "flag"


def _literal(node: ast.AST | None) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = _literal(node.operand)
        return -operand if isinstance(operand, (int, float)) else _NOT_LITERAL
    return _NOT_LITERAL


def _assignments(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(name, value) of a `NAME = value` or `NAME: type = value` statement."""
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                yield target.id, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
        yield node.target.id, node.value


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


class _Project:
    """The parsed source files, with names resolved to the literal they are bound to."""

    def __init__(self, root: pathlib.Path | str):
        self.trees = dict(python_files(root))

    def _module_path(self, module: str) -> str | None:
        base = module.replace(".", "/")
        return next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in self.trees), None)

    def _imports(self, path: str) -> dict[str, str]:
        """Local name → what it imports: "pkg.module" or "pkg.module.NAME"."""
        names = {}
        for node in self.trees[path].body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b.
                    top = alias.name.split(".")[0]
                    names[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        return names

    def _resolve_dotted(self, dotted: str, depth: int) -> tuple[object, Site] | None:
        module, _, name = dotted.rpartition(".")
        path = self._module_path(module)
        return self._resolve_name(path, name, depth + 1) if path else None

    def _resolve_name(self, path: str, name: str, depth: int) -> tuple[object, Site] | None:
        if depth > 8:
            return None
        for node in self.trees[path].body:
            for target, value in _assignments(node):
                if target == name:
                    return self.resolve(path, value, depth + 1)
        imported = self._imports(path).get(name)
        return self._resolve_dotted(imported, depth) if imported else None

    def resolve(self, path: str, node: ast.AST, depth: int = 0) -> tuple[object, Site] | None:
        """(value, site) of the literal an expression stands for; None when it is not one."""
        value = _literal(node)
        if value is not _NOT_LITERAL:
            return value, (path, node.lineno)
        if isinstance(node, ast.Name):
            return self._resolve_name(path, node.id, depth)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = self._imports(path).get(node.value.id)
            return self._resolve_dotted(f"{module}.{node.attr}", depth) if module else None
        if isinstance(node, ast.Call) and _call_name(node) == "field":
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            return self.resolve(path, default, depth) if default is not None else None
        return None


@dataclass(frozen=True)
class _Default:
    field: str  # "Class.field"
    value: object
    site: Site  # where its literal is written
    module: str  # the config class's file


def _is_config_class(node: ast.ClassDef) -> bool:
    decorated = any("dataclass" in ast.unparse(d) for d in node.decorator_list)
    return decorated and (node.name.endswith(CONFIG_CLASS_SUFFIX) or node.name in CONFIG_CLASSES)


def config_defaults(project: _Project) -> dict[str, list[_Default]]:
    """field name → its defaults in every config dataclass that has the field and a literal default."""
    defaults: dict[str, list[_Default]] = {}
    for path, tree in project.trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and _is_config_class(node):
                for statement in node.body:
                    for name, value in _assignments(statement):
                        resolved = project.resolve(path, value)
                        if resolved is not None:
                            default = _Default(f"{node.name}.{name}", *resolved, path)
                            defaults.setdefault(name, []).append(default)
    return defaults


def _flag_name(call: ast.Call) -> str:
    """The attribute name argparse gives a flag: `dest`, else the longest option without dashes."""
    dest = next((k.value for k in call.keywords if k.arg == "dest"), None)
    if isinstance(dest, ast.Constant):
        return dest.value
    options = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return max(options, key=len, default="").lstrip("-").replace("-", "_")


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Iterator[tuple[str, ast.AST]]:
    arguments = node.args
    positional = arguments.posonlyargs + arguments.args
    with_default = positional[len(positional) - len(arguments.defaults) :]
    yield from ((a.arg, d) for a, d in zip(with_default, arguments.defaults, strict=True))
    yield from ((a.arg, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d)


def literals(project: _Project) -> Iterator[_Literal]:
    """Literals written where a default is restated: module constants, class attributes, parameter
    defaults and the `default=` of command-line flags."""
    for path, tree in project.trees.items():
        for node in tree.body:
            for name, value in _assignments(node):
                yield _Literal(path, value.lineno, name, _literal(value), "constant")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    for name, value in _assignments(statement):
                        yield _Literal(path, value.lineno, name, _literal(value), "attribute")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for name, default in _parameters(node):
                    yield _Literal(path, default.lineno, name, _literal(default), "parameter")
            elif isinstance(node, ast.Call) and _call_name(node) == "add_argument":
                for keyword in node.keywords:
                    if keyword.arg == "default":
                        value = _literal(keyword.value)
                        yield _Literal(path, keyword.value.lineno, _flag_name(node), value, "flag")


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _restated(literal: _Literal, defaults: dict[str, list[_Default]]) -> list[_Default]:
    """The defaults a literal restates (see the module docstring for the rules)."""
    value = literal.value
    if isinstance(value, str) and len(value) >= 4:
        basename = value.rsplit("/", 1)[-1]
        return [
            d
            for entries in defaults.values()
            for d in entries
            if isinstance(d.value, str) and len(d.value) >= 4 and d.value in (value, basename)
        ]
    if value in TRIVIAL:
        return []
    if literal.kind == "constant" and not literal.name.isupper():
        return []
    name = literal.name.lower()
    return [
        d
        for d in defaults.get(name, [])
        if _same(d.value, value) and (len(name) > 1 or d.module == literal.path)
    ]


def restated_defaults(
    root: pathlib.Path | str, allowed: dict[tuple[str, str], str] | None = None
) -> list[Violation]:
    """Config defaults written a second time as a literal (`allowed` (file, name) pairs excepted)."""
    allowed = DEFAULT_ALLOWED if allowed is None else allowed
    project = _Project(root)
    defaults = config_defaults(project)
    owners = {d.site for entries in defaults.values() for d in entries}
    found = []
    for literal in literals(project):
        if literal.value is _NOT_LITERAL or (literal.path, literal.line) in owners:
            continue
        if (literal.path, literal.name) in allowed:
            continue
        for default in _restated(literal, defaults)[:1]:
            where = f"{default.site[0]}:{default.site[1]}"
            message = f"{literal.kind} {literal.name} = {literal.value!r} restates {default.field} ({where})"
            found.append(Violation(literal.path, literal.line, message, literal.name))
    for name, entries in defaults.items():
        for value in {d.value for d in entries if d.value not in TRIVIAL}:
            same = [d for d in entries if _same(d.value, value)]
            sites = sorted({d.site for d in same})
            owners_text = ", ".join(f"{d.field} ({d.site[0]}:{d.site[1]})" for d in same)
            for path, line in sites[1:]:
                message = f"{name} = {value!r} is written twice: {owners_text}"
                found.append(Violation(path, line, message, name))
    return sorted(found)


# ------------------------------------------------------------------------------------------ endpoints
ENDPOINT_FILES = ("serving/config.py", "serving/service_config.py")  # where DEFAULT_HOST and the ports live


def default_endpoints(root: pathlib.Path | str) -> dict[str, str]:
    """Each default "host:port" → the constants it restates (DEFAULT_HOST, ENDPOINT_FILES' `*_PORT` ints)."""
    constants: dict[str, object] = {}
    for path in ENDPOINT_FILES:
        full = pathlib.Path(root) / path
        if full.is_file():
            for node in ast.parse(full.read_text(encoding="utf-8")).body:
                for name, value in _assignments(node):
                    if isinstance(value, ast.Constant):
                        constants.setdefault(name, value.value)
    ports = {name: port for name, port in constants.items() if name.endswith("_PORT") and type(port) is int}
    hosts = {"DEFAULT_HOST": constants.get("DEFAULT_HOST"), "localhost": "localhost"}
    return {
        f"{host}:{port}": f"{host_name}:{port_name}"
        for host_name, host in hosts.items()
        if isinstance(host, str)
        for port_name, port in ports.items()
    }


def endpoint_literals(root: pathlib.Path | str) -> list[Violation]:
    """String literals (code) containing a default host:port outside serving/config.py."""
    endpoints = default_endpoints(root)
    found = []
    for path, tree in python_files(root):
        if path == ENDPOINT_FILES[0]:
            continue
        skipped = _not_code(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
                for endpoint, names in endpoints.items():
                    if endpoint in node.value:
                        message = f"{node.value!r} restates {names}"
                        found.append(Violation(path, node.lineno, message, endpoint))
    return sorted(found)


# ------------------------------------------------------------------------------------------ tests
def test_feature_keys_are_written_only_in_features_py():
    found = feature_key_literals(ROOT)
    assert not found, "use the trainer.features constant:\n" + "\n".join(map(str, found))


def test_config_defaults_are_written_once():
    found = restated_defaults(ROOT)
    assert not found, "derive these from the config dataclass field:\n" + "\n".join(map(str, found))


def test_default_endpoints_are_built_from_the_constants():
    assert "127.0.0.1:8500" in default_endpoints(ROOT)  # the check sees the real constants
    found = endpoint_literals(ROOT)
    assert not found, "build these from serving.config's constants:\n" + "\n".join(map(str, found))


def test_the_endpoint_checker_on_a_tiny_project(tmp_path):
    files = {
        "serving/config.py": 'DEFAULT_HOST = "127.0.0.1"\nGRPC_PORT = 8500\nTARGET = "127.0.0.1:8500"\n',
        "serving/service_config.py": "SERVICE_PORT = 8080\n",
        "serving/client.py": '''"""Docs may show "127.0.0.1:8500"."""
URL = "http://127.0.0.1:8080/v1"
TARGET = f"127.0.0.1:{PORT}"
OTHER = "localhost:8500"
''',
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    assert [str(v) for v in endpoint_literals(tmp_path)] == [
        "serving/client.py:2: 'http://127.0.0.1:8080/v1' restates DEFAULT_HOST:SERVICE_PORT",
        "serving/client.py:4: 'localhost:8500' restates localhost:GRPC_PORT",
    ]


def test_every_allow_list_entry_is_still_needed():
    flagged = {(v.path, v.subject) for v in feature_key_literals(ROOT, allowed={})}
    flagged |= {(v.path, v.subject) for v in restated_defaults(ROOT, allowed={})}
    allowed = [(path, literal) for path, (literals, _) in FEATURE_KEY_ALLOWED.items() for literal in literals]
    allowed += list(DEFAULT_ALLOWED)
    unused = [f"{path}: {name!r}" for path, name in allowed if (path, name) not in flagged]
    assert not unused, "allow-list entries that no longer match anything:\n" + "\n".join(unused)


TINY_PROJECT = {
    "trainer/features.py": '"""Keys."""\nITEM_ID = "item_id"\n',
    "trainer/config.py": """import dataclasses

DEFAULT_BERT = "mini-bert"


@dataclasses.dataclass
class TrainerConfig:
    pool: int = 100
    bert: str = DEFAULT_BERT
    seed: int = 0
""",
    "serving/config.py": """import dataclasses

from trainer import config


@dataclasses.dataclass
class ServerConfig:
    bert: str = config.DEFAULT_BERT  # derived: fine
    seed: int = 0  # a small default of its own: fine
    pool: int = 100  # the same name and value written again
""",
    "serving/client.py": """'''Says "item_id" in a docstring.'''
POOL = 100
SEED = 0


def ask(features, bert="/models/mini-bert", pool=config.TrainerConfig.pool):
    return features["item_id"], f"item_id={bert}"


def flags(parser):
    parser.add_argument("--pool", default=100)
""",
}


def test_the_checkers_on_a_tiny_project(tmp_path):
    for path, text in TINY_PROJECT.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    assert [str(v) for v in feature_key_literals(tmp_path, allowed={})] == [
        "serving/client.py:7: 'item_id' is features.ITEM_ID"
    ]
    assert [str(v) for v in restated_defaults(tmp_path, allowed={})] == [
        "serving/client.py:2: constant POOL = 100 restates TrainerConfig.pool (trainer/config.py:8)",
        "serving/client.py:6: parameter bert = '/models/mini-bert' restates TrainerConfig.bert "
        "(trainer/config.py:3)",
        "serving/client.py:11: flag pool = 100 restates TrainerConfig.pool (trainer/config.py:8)",
        # One of the two sites (sorted by path) is reported; the message names both.
        "trainer/config.py:8: pool = 100 is written twice: TrainerConfig.pool (trainer/config.py:8), "
        "ServerConfig.pool (serving/config.py:10)",
    ]
