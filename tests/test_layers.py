"""The engine's import structure: no cycle, and no arrow back up.

Every module of nanokimi/ is parsed with `ast`, so an import written anywhere counts: at the top,
inside a function (a lazy import hides a cycle from Python, not from this test), relative or
absolute. The layers, lowest first; a module may import its own layer and those below it:

    foundations (settings, paths, status, metrics, __init__) < training < experiments < running
    < results < cli, __main__
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanokimi"
LAYERS = ("foundations", "training", "experiments", "running", "results", "entry")
FOUNDATIONS = {"nanokimi", "nanokimi.settings", "nanokimi.paths", "nanokimi.status", "nanokimi.metrics"}
ENTRY = {"nanokimi.cli", "nanokimi.__main__"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    """{module name: path} of every module of the package."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(module, node, known):
    """The nanokimi modules an import statement of `module` names (a from-import of a name that is a
    module, `from . import report`, names that module; otherwise the module it imports from)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.split(".")
            is_package = (PACKAGE.parent / Path(*package) / "__init__.py").is_file()
            base = package[:len(package) - node.level + (1 if is_package else 0)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]
    found = set()
    for target in targets:
        while target and target not in known:  # `import nanokimi.training.model as m` names the module itself
            target = target.rpartition(".")[0]
        if target.startswith("nanokimi"):
            found.add(target)
    return found - {module}


def import_graph():
    """{module: set of nanokimi modules it imports, at any depth of its code}."""
    known = modules()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set().union(*(resolve(module, node, known) for node in ast.walk(tree)
                                      if isinstance(node, (ast.Import, ast.ImportFrom))))
    return graph


def layer(module):
    if module in FOUNDATIONS:
        return 0
    if module in ENTRY or module.startswith("nanokimi.cli."):  # the cli package's modules are the entry too
        return len(LAYERS) - 1
    return LAYERS.index(module.split(".")[1])


def cycles(graph):
    """Every import cycle, each once, as a list of modules that returns to its first."""
    found, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                found.append(cycle)
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def upward(graph):
    """Every import of a module in a higher layer: "importer → imported"."""
    return [f"{module} ({LAYERS[layer(module)]}) → {target} ({LAYERS[layer(target)]})"
            for module, targets in sorted(graph.items()) for target in sorted(targets) if layer(target) > layer(module)]


def test_the_check_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "nanokimi.training.model" in graph["nanokimi.training.train"], "a relative import at the top"
    assert "nanokimi.running.backends" in graph["nanokimi.running.grid"], "a lazy import inside a function"
    assert all(layer(module) in range(len(LAYERS)) for module in graph), "every module has a layer"


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert upward({"nanokimi.training.model": {"nanokimi.results.report"}}) == [
        "nanokimi.training.model (training) → nanokimi.results.report (results)"]


def test_there_is_no_import_cycle_in_the_engine():
    assert cycles(import_graph()) == []


def test_no_module_imports_one_from_a_layer_above_it():
    assert upward(import_graph()) == []
