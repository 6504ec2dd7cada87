"""The shape of the package: modules import only downward (no circle), functions stay short."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import flax_cyclic

PACKAGE = pathlib.Path(flax_cyclic.__file__).parent
MAX_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imported(name: str, tree: ast.AST) -> set[str]:
    """The package's modules that ``name`` imports anywhere: top level, in functions, type-only."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                )
                base = base.rstrip(".")
            # `from pkg import sub` imports the submodule when there is one, else pkg itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imported(name, ast.parse(path.read_text())) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_type_only_and_lazy_imports_included():
    assert _cycles(GRAPH) == []


def test_the_graph_sees_lazy_and_type_only_imports():
    # plotting names LRFinderResult only for type checking; lr_find's result draws itself.
    assert "flax_cyclic.lr_finder" in GRAPH["flax_cyclic.plotting"]
    assert "flax_cyclic._figures" in GRAPH["flax_cyclic.callbacks._lr_logging"]


def _code_lines(function: ast.AST, source: list[str]) -> int:
    """Lines of code of a function: no blank lines, comments or docstring."""
    body = function.body
    skip = set()
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
        skip = set(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number in range(function.lineno, function.end_lineno + 1)
        if number not in skip
        and source[number - 1].strip()
        and not source[number - 1].strip().startswith("#")
    )


def _functions():
    for name, path in MODULES.items():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{name}.{node.name}:{node.lineno}", _code_lines(node, lines)


@pytest.mark.parametrize("limit", [MAX_LINES])
def test_no_function_is_longer_than_the_limit(limit):
    long = {name: lines for name, lines in _functions() if lines > limit}
    assert long == {}


#: The public names of 0.1.0: each still imports from where 0.1.0 had it.
PUBLIC_0_1_0 = {
    "flax_cyclic": [
        "Callback", "CallbackList", "CheckpointError", "Checkpointer", "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts", "CyclicLR", "History", "LRFinderResult", "LRScheduler",
        "LRSchedulerCallback", "MetricsLogger", "OneCycleLR", "ProgressBar", "Trainer",
        "TriangularLR", "__version__", "cosine_annealing_schedule",
        "cosine_warm_restarts_schedule", "create_writer", "cyclic_schedule", "lr_find",
        "onecycle_schedule", "triangular_schedule",
    ],
    "flax_cyclic.plotting": ["plot_lr_find", "plot_schedule", "schedule_values"],
    "flax_cyclic.trainer": ["classification_eval_step", "classification_train_step"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC_0_1_0))
def test_every_public_name_of_0_1_0_still_imports(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC_0_1_0[module] if not hasattr(imported, name)]
    assert missing == []
    if module == "flax_cyclic":
        assert set(PUBLIC_0_1_0[module]) <= set(flax_cyclic.__all__)
