"""The rule table is the contract: every rule has a test that names it, and every rule id the
code names is in the table.

Rule ids are strings (`error("patient.unknown", ...)`), looked up when the error is made: a
mistyped one would raise KeyError only when that error happens, in front of a client.
`rule_id_problems` reads every module of xds/ with `ast` instead, and finds the rule ids in
two ways:

- where they are used: the first argument of `xds.rules.error`, `RULES[...]`, and of every
  function, method or dataclass of xds/ with a parameter or field named `rule_id` or
  `..._rule` (so `self.fail(...)` of the ebRIM reader, the `missing_rule` of a validation
  table; a new helper that takes a rule id is checked as soon as it names its parameter so),
  and of every dataclass with a field whose value is passed on where a rule id goes
  (`error(transaction.internal_error)` makes the `internal_error` of a transaction's row one).
  A literal there must be a rule id; an f-string or concatenation there is refused, because it
  cannot be checked.
- what they look like: any string literal of the form `family.name` that is within two typing
  slips of a rule id, wherever it stands (the tables of `xds.registry.validate`, a keyword, a
  dict, a variable later passed to `error`), is a mistyped rule id. (A family alone says too
  little: `registry.sqlite3` is a file name.) The tables of `xds.registry.validate` are also
  checked as loaded.
"""

from __future__ import annotations

import ast
import difflib
import re
import string
from dataclasses import dataclass
from pathlib import Path

import xds
from xds.rules import RULES

XDS_DIR = Path(xds.__file__).parent
#: How a rule id is written: lower-case words joined by '-', a family and a name joined by '.'.
RULE_ID_SHAPE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\.[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SLIPS = 2  # edits (a letter added, left out, changed, or two swapped) that make a near miss


def test_every_rule_has_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    untested = [rule_id for rule_id in RULES if f'"{rule_id}"' not in tests]
    assert untested == [], f"rules without a test: {untested}"


def test_every_rule_message_fills_from_its_own_placeholders():
    for rule in RULES.values():
        names = {field for _, field, _, _ in string.Formatter().parse(rule.message) if field}
        text = rule.error(**{n: f"<{n}>" for n in names}).context
        assert "{" not in text and text, rule.id


# --- every rule id the code names is in the table ---------------------------------------------

@dataclass(frozen=True)
class Sink:
    """A callable of xds/ that takes a rule id: its argument `index` (not counting self), or
    the keyword `name`."""

    index: int
    name: str
    method: bool


def _sinks(tree: ast.Module, fields: set[str]) -> dict[str, Sink]:
    """The functions, methods and dataclasses of a module that take a rule id, by name: those
    with a parameter `rule_id` or `..._rule`, and the classes with a field of those names or
    of `fields`."""
    found: dict[str, Sink] = {}

    def takes_rule_id(name: str) -> bool:
        return name == "rule_id" or name.endswith("_rule")

    def function(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> None:
        params = [*node.args.posonlyargs, *node.args.args]
        if method and params and params[0].arg in ("self", "cls"):
            params = params[1:]
        for index, param in enumerate(params):
            if takes_rule_id(param.arg):
                found[node.name] = Sink(index, param.arg, method)
                return
        for param in node.args.kwonlyargs:
            if takes_rule_id(param.arg):
                found[node.name] = Sink(-1, param.arg, method)
                return

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function(node, method=False)
        elif isinstance(node, ast.ClassDef):
            names = [item.target.id for item in node.body
                     if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)]
            for index, name in enumerate(names):  # a dataclass's constructor takes its fields
                if takes_rule_id(name) or name in fields:
                    found[node.name] = Sink(index, name, method=False)
                    break
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function(item, method=True)
    return found


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _pieced(node: ast.AST) -> bool:
    """An f-string, a concatenation or a % format: a rule id that cannot be checked."""
    return isinstance(node, (ast.JoinedStr, ast.BinOp))


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _near_miss(value: str, rules) -> str | None:
    """The rule id `value` is a slip of, if any."""
    for rule_id in rules:
        if abs(len(rule_id) - len(value)) <= SLIPS and _distance(value, rule_id) <= SLIPS:
            return rule_id
    return None


def _distance(a: str, b: str) -> int:
    """Edits from a to b: insertions, deletions, substitutions, swaps of neighbours."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def _uses(module: str, tree: ast.Module, sinks: dict[str, dict[str, Sink]]):
    """The arguments of `tree` that are rule ids: at the callables of `sinks` ({module:
    {name: Sink}}) that this module calls, and inside RULES[...]."""
    # What each name of this module calls: its own callables, and those it imports from xds/.
    local = {name: sink for name, sink in sinks[module].items() if not sink.method}
    methods = {name: sink for name, sink in sinks[module].items() if sink.method}
    modules: dict[str, str] = {}  # a name bound to a module of xds/
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound = alias.asname or alias.name
                if alias.name in sinks.get(node.module, {}):
                    local[bound] = sinks[node.module][alias.name]
                elif f"{node.module}.{alias.name}" in sinks:
                    modules[bound] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in sinks and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "RULES":
            yield node.slice
            continue
        if not isinstance(node, ast.Call):
            continue
        func, sink = node.func, None
        if isinstance(func, ast.Name):
            sink = local.get(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in ("self", "cls"):
                sink = methods.get(func.attr)
            elif func.value.id in modules:
                sink = sinks[modules[func.value.id]].get(func.attr)
        if sink is None:
            continue
        if 0 <= sink.index < len(node.args):
            yield node.args[sink.index]
        else:
            yield from (k.value for k in node.keywords if k.arg == sink.name)


def rule_id_problems(sources: dict[str, tuple[str, str]], rules=RULES) -> tuple[list[str], int]:
    """Every rule id of `sources` ({module name: (path, source)}) that is not in `rules`, as
    'path:line: ...' lines, and the number of literal rule ids found where they are used."""
    trees = {module: ast.parse(text, path) for module, (path, text) in sources.items()}
    # A field whose value is passed where a rule id goes (error(transaction.internal_error))
    # holds rule ids: the classes with such a field are sinks too. Until no new field appears.
    fields: set[str] = set()
    while True:
        sinks = {module: _sinks(tree, fields) for module, tree in trees.items()}
        uses = {module: list(_uses(module, tree, sinks)) for module, tree in trees.items()}
        found = {u.attr for used in uses.values() for u in used if isinstance(u, ast.Attribute)}
        if found <= fields:
            break
        fields |= found

    problems: list[str] = []
    count = 0

    def unknown(path: str, node: ast.AST, value: str, how: str) -> None:
        close = difflib.get_close_matches(value, rules, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"{path}:{node.lineno}: '{value}' {how} is not a rule of xds.rules{hint}")

    for module, tree in trees.items():
        path = sources[module][0]
        checked: set[int] = set()
        for argument in uses[module]:
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                count += 1
                checked.add(id(argument))
                if argument.value not in rules:
                    unknown(path, argument, argument.value, "is used as a rule id but")
            elif _pieced(argument):
                problems.append(f"{path}:{argument.lineno}: a rule id built from pieces cannot be checked; "
                                "name the rule with one literal")
        skip = checked | _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                    and node.value not in rules and RULE_ID_SHAPE.fullmatch(node.value)
                    and _near_miss(node.value, rules) is not None):
                unknown(path, node, node.value, "looks like a rule id but")
    return problems, count


def _xds_sources() -> dict[str, tuple[str, str]]:
    return {_module_name(path, XDS_DIR): (str(path.relative_to(XDS_DIR.parent)), path.read_text(encoding="utf-8"))
            for path in sorted(XDS_DIR.rglob("*.py"))}


def test_every_rule_id_in_the_code_is_in_the_table():
    problems, used = rule_id_problems(_xds_sources())
    assert problems == []
    # The walk must have found the rule ids where they are used, not silently nothing: error(),
    # the ebRIM reader's fail(), the validation tables' missing_rule.
    assert used >= 100


def test_the_validation_tables_name_rules_of_the_table():
    """The tables of xds.registry.validate as loaded (values the walk sees only by their look)."""
    from xds.registry import validate

    tables = [value for value in vars(validate).values() if isinstance(value, validate.ObjectRules)]
    assert len(tables) == 4
    named = {table.missing_rule for table in tables} | {row[-1] for table in tables for row in table.formats}
    assert named - set(RULES) == set()


# --- the check catches a mistyped id ----------------------------------------------------------

RULES_MODULE = '''
def error(rule_id, location="", **values): ...
'''

MISTYPED = '''
from dataclasses import dataclass
import logging
from xds.rules import error, RULES
from xds import rules as r

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Table:
    what: str
    missing_rule: str

DOCUMENT = Table("DocumentEntry", "document.mising")            # slip: a dataclass field
KEYWORD = Table(what="Folder", missing_rule="foldr.missing")     # slip: the same, by keyword
FORMATS = (("creationTime", None, "fromat.dtm"),)                # slip: a table row, near a rule id
OTHER = "format.date"                                            # slip: a variable, near a rule id

@dataclass(frozen=True)
class Row:
    name: str
    on_failure: str | None = None

ROW = Row("ITI-42", on_failure="registry.internl")              # slip: a field that reaches error()
ROWS = [Row("ITI-18 Registry Stored Query")]                   # another field: not a rule id

def failed(row):
    return error(row.on_failure)

class Reader:
    def fail(self, rule_id, location="", **values): ...

    def read(self, ctx):
        self.fail("object.misssing-id")                         # slip: a method taking rule_id
        ctx.fail("a message, not a rule id")                     # another fail(): not a rule id
        log.error("patient.unknown happened")                    # logging, not a rule
        log.error("meta.json")

def check(kind):
    yield error("patient.unknwon", "P1")                         # slip: xds.rules.error
    yield error(rule_id="patient-unknown")                       # slip: by keyword, in any look
    yield r.error("query.internl")                               # slip: through the module
    yield RULES["registry.bussy"]                                # slip: the table itself
    yield error(f"{kind}.missing")                               # slip: cannot be checked
    yield error("patient.unknown"), error(kind.missing_rule)     # right, and from a table
    open("meta.json"), "xds.registry", "registry.sqlite3"        # other strings of a rule id's look
'''


def test_the_check_finds_every_mistyped_rule_id():
    problems, used = rule_id_problems({"xds.rules": ("xds/rules.py", RULES_MODULE),
                                       "xds.example": ("xds/example.py", MISTYPED)})
    slips = [n for n, line in enumerate(MISTYPED.splitlines(), 1) if "# slip" in line]
    by_line = {int(p.split(":")[1]): p for p in problems}
    assert sorted(by_line) == slips and len(problems) == len(slips), problems
    assert used == 9  # the literals where rule ids are used: Table() twice, Row, fail, error four times, RULES
    assert by_line[slips[0]].startswith("xds/example.py:")
    assert by_line[slips[6]].endswith(
        "'patient.unknwon' is used as a rule id but is not a rule of xds.rules; did you mean 'patient.unknown'?")
    assert "did you mean 'format.dtm'?" in by_line[slips[2]]
    assert "built from pieces" in by_line[slips[-1]]


def test_the_real_tree_with_one_slip_fails():
    """The check on the project itself: one letter left out of one rule id is found."""
    sources = _xds_sources()
    module = next(m for m, (_, text) in sources.items() if m != "xds.rules" and '"patient.unknown"' in text)
    path, text = sources[module]
    sources[module] = (path, text.replace('"patient.unknown"', '"patient.unkown"', 1))
    problems, _ = rule_id_problems(sources)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:"), problems
    assert "'patient.unkown'" in problems[0] and "did you mean 'patient.unknown'?" in problems[0]
