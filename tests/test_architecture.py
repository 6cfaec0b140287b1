"""The shape of ``app/``: no import cycle, and the environment read in one place at startup.

Read from the source with :mod:`ast`, so every import counts: at module level, inside functions
(deferred imports) and under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"
# The process environment is read into Settings by app.settings.load; app.serve hands the workers
# and the libraries their own variables (PROMETHEUS_MULTIPROC_DIR, MLflow's pool class) once at
# startup; app.entrypoint fills in WORKERS before it execs churn-api serve.
ENVIRONMENT_MODULES = {"app.settings", "app.serve", "app.entrypoint"}


def module_name(path: Path) -> str:
    return "app" if path.stem == "__init__" else f"app.{path.stem}"


def trees() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(APP.glob("*.py"))}


def imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``tree`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & modules


def graph() -> dict[str, set[str]]:
    parsed = trees()
    return {name: imports(tree, set(parsed)) - {name} for name, tree in parsed.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(edges.get(node, ())):
            if (found := visit(target, [*path, node])) is not None:
                return found
        done.add(node)
        return None

    for start in sorted(edges):
        if (found := visit(start, [])) is not None:
            return found
    return None


def test_no_import_cycle_in_app() -> None:
    edges = graph()

    assert len(edges) > 20  # every module was read
    found = cycle(edges)
    assert found is None, "import cycle: " + " -> ".join(found or [])


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[str] | None
) -> None:
    assert cycle(edges) == expected


def test_a_deferred_import_counts() -> None:
    tree = ast.parse(
        "def f():\n    from app.cli import main\nif __name__ == '__main__':\n    import app.x"
    )
    assert imports(tree, {"app.cli", "app.x"}) == {"app.cli", "app.x"}


def reads_environment(tree: ast.Module) -> list[int]:
    """Lines that touch ``os.environ``, ``os.getenv``, ``os.putenv`` or ``os.unsetenv``."""
    names = {"environ", "getenv", "putenv", "unsetenv", "environb"}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno] if any(alias.name in names for alias in node.names) else []
    return lines


def test_only_the_startup_modules_touch_the_environment() -> None:
    touching = {name: lines for name, tree in trees().items() if (lines := reads_environment(tree))}

    assert set(touching) <= ENVIRONMENT_MODULES, {
        name: lines for name, lines in touching.items() if name not in ENVIRONMENT_MODULES
    }
    assert "app.settings" in touching  # the check does see a use


def test_readmes_layout_table_lists_every_module_and_no_other() -> None:
    readme = (APP.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`app/(\w+)\.py`", layout))
    modules = {path.stem for path in APP.glob("*.py")} - {"__init__"}

    assert listed == modules


def test_every_module_in_app_is_at_most_about_200_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in APP.glob("*.py")}

    assert len(sizes) > 40  # the glob does see the modules
    assert {name: lines for name, lines in sizes.items() if lines > 210} == {}
