"""The layout shows the architecture: no two modules of service/ and tasks/ import each other, directly or
through others, at module level or inside functions; tasks know nothing of the service; no module grows
past what one can read at once."""
import ast

from conftest import REPO

PACKAGES = ("service", "tasks")
MAX_LINES = 330  # "about 300": a module longer than this is doing more than one thing


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def _imports(name, path, known):
    """The project modules `name` imports anywhere in its file: `from . import x` names module x."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in known else module)
    return {module for module in found if module in known and module != name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_itself_through_others():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_walk_sees_imports_inside_functions():
    graph = _graph()
    assert any(dep.startswith("service.daemon") for dep in graph["service.cli"])  # `serve` imports it when asked
    assert "tasks.rehearsal" in graph["tasks.warmup"]


def test_tasks_know_nothing_of_the_service():
    graph = _graph()
    assert not {name: deps for name, deps in graph.items() if name.startswith("tasks") and any(
        dep.startswith("service") for dep in deps)}


def test_tasks_iris_holds_only_the_tasks():
    import luigi

    import tasks.iris

    defined = {name: value for name, value in vars(tasks.iris).items()
               if getattr(value, "__module__", None) == "tasks.iris"}
    assert defined and all(isinstance(value, type) and issubclass(value, luigi.Task) for value in defined.values())


def test_every_module_says_its_concern_and_stays_readable():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{name} has no docstring saying its concern"
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{name} has {lines} lines"
