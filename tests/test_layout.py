"""The code's shape, checked: what issue 25 asked of the layout stays true as code is added.

- nothing under `peterrec_tf/models` or `peterrec_tf/layers` imports `pipelines` (the model
  package owns its preprocessing; the data package sits beside it, not under it);
- no transfer method, objective or data format name is compared as a string outside the
  module that defines it (a new one is a new file, not edits in eight places);
- no library module over 400 lines, no function over 80;
- no import cycle between the library's modules.

Each rule is tested against a planted violation too, so a rule that can no longer fail
would show up here."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("peterrec_tf", "pipelines")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def library_modules():
    for root in LIBRARY:
        for directory, _, files in os.walk(os.path.join(REPO, root)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    yield os.path.relpath(path, REPO), open(path, encoding="utf-8").read()


def module_name(relative_path):
    parts = relative_path[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(relative_path):
    """The package a file's relative imports start from: its directory, dotted."""
    return ".".join(relative_path.split(os.sep)[:-1])


def imported_modules(source, package):
    """Every module an import statement names (relative imports resolved against `package`,
    the importing file's directory)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def pipelines_imports(relative_path, source):
    return sorted({name for name in imported_modules(source, package_of(relative_path))
                   if name == "pipelines" or name.startswith("pipelines.")})


def over_length(relative_path, source):
    found = []
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{relative_path}: {lines} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{relative_path}:{node.lineno} {node.name}(): {length} lines")
    return found


def registered_names():
    """{name: the module allowed to compare it}: every transfer method, objective, format."""
    from peterrec_tf import objectives, transfer_methods
    from pipelines import formats

    owners = {}
    for registry in (transfer_methods, objectives, formats):
        for name in registry.names():
            owners[name] = registry.module_of(name)
    return owners


def string_comparisons(relative_path, source, names):
    """`x == "name"`, `x != "name"`, `x in ("name", ...)` with a registered name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            candidates = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) \
                else [operand]
            for item in candidates:
                if isinstance(item, ast.Constant) and item.value in names:
                    found.append((item.value, f"{relative_path}:{node.lineno}"))
    return found


def import_graph():
    modules = dict(library_modules())
    known = {module_name(path) for path in modules}
    graph = {}
    for path, source in modules.items():
        name = module_name(path)
        graph[name] = {target for target in imported_modules(source, package_of(path))
                       if target in known and target != name
                       and not name.startswith(target + ".")}
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the rules, on the real code ---------------------------------------------------------


def test_models_and_layers_do_not_import_the_data_pipelines():
    offenders = {path: pipelines_imports(path, source) for path, source in library_modules()
                 if path.startswith((os.path.join("peterrec_tf", "models") + os.sep,
                                     os.path.join("peterrec_tf", "layers") + os.sep))}
    assert not {p: i for p, i in offenders.items() if i}


def test_no_module_or_function_over_the_limits():
    found = [problem for path, source in library_modules()
             for problem in over_length(path, source)]
    assert not found, "\n".join(found)


def test_registered_names_are_compared_only_in_their_own_module():
    owners = registered_names()
    assert {"peterrec", "fineall", "next_item", "masked_item", "interactions"} <= set(owners)
    found = []
    for path, source in library_modules():
        for name, where in string_comparisons(path, source, set(owners)):
            if module_name(path) != owners[name]:
                found.append(f"{where} compares {name!r} (owned by {owners[name]})")
    assert not found, "\n".join(found)


def test_no_import_cycle_in_the_library():
    assert cycles(import_graph()) == []


# --- each rule can fail ------------------------------------------------------------------

def test_the_rules_catch_planted_violations():
    planted = "from pipelines.framing import Framing\nimport pipelines.inputs as inputs\n"
    assert pipelines_imports("peterrec_tf/models/x.py", planted) == [
        "pipelines.framing", "pipelines.framing.Framing", "pipelines.inputs"]
    long_function = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert over_length("m.py", long_function) == ["m.py:1 f(): 81 lines"]
    assert over_length("m.py", "x = 1\n" * (MAX_MODULE_LINES + 1)) == ["m.py: 401 lines"]
    compared = 'if method == "peterrec" or name in ("fineall", "other"):\n    pass\n'
    assert [n for n, _ in string_comparisons("m.py", compared, {"peterrec", "fineall"})] == [
        "peterrec", "fineall"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("relative, package, expected", [
    ("from . import x\n", "pipelines.formats", "pipelines.formats.x"),
    ("from ..framing import F\n", "peterrec_tf.models", "peterrec_tf.framing.F"),
])
def test_relative_imports_are_resolved(relative, package, expected):
    assert expected in set(imported_modules(relative, package))
