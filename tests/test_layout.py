"""The layout's rules, checked by parsing the source: imports flow one way, no cycles, light entry points."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search", "spaces")
# The stages in the order imports may flow: a module may import its own stage and earlier ones.
STAGES = ("errors", "config", "io", "data", "train", "study", "dispatch", "ensemble", "report", "auto", "api", "cli")
FOUNDATION = ("config", "io", "errors")  # import nothing of the project's but each other
HEAVY = ("torch", "optuna", "ray", "sqlalchemy", "plotly", "pandas")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules a file imports; with top_level_only, leaves out imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = project_modules()
    return {name for name in found if name in modules}


def graph(*, top_level_only: bool) -> dict[str, set[str]]:
    return {name: imports_of(path, top_level_only=top_level_only) - {name} for name, path in project_modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    visiting, done = [], set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return visiting[visiting.index(node) :] + [node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(edges.get(node, ())):
            # a package's __init__ importing its own modules is how re-exports work, not a cycle
            if target.startswith(node + "."):
                continue
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(edges):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_search_and_spaces_even_through_function_level_imports():
    assert find_cycle(graph(top_level_only=False)) is None


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "search" or len(parts) == 1:
        return None
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def test_imports_flow_one_way_through_the_stages():
    backwards = []
    for module, targets in graph(top_level_only=False).items():
        here = stage_of(module)
        for target in targets:
            there = stage_of(target)
            if here is not None and there is not None and there > here:
                backwards.append(f"{module} -> {target}")
    assert not backwards, backwards


def test_every_module_of_search_belongs_to_a_stage():
    strays = [m for m in project_modules() if m.startswith("search.") and stage_of(m) is None]
    assert not strays


def test_the_foundation_imports_nothing_heavy_and_nothing_later():
    for name in FOUNDATION:
        tree = ast.parse((ROOT / "search" / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for module in filter(None, modules):
                assert module.split(".")[0] not in HEAVY, f"search.{name} imports {module}"
                if module.startswith("search."):
                    assert module.split(".")[1] in FOUNDATION, f"search.{name} imports {module}"


@pytest.mark.parametrize(
    "code",
    [
        "import search",
        "import search.config, search.errors, search.io",
        "from search.cli.main import main\nimport sys\nsys.argv = ['digit-search', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass",
        "from search.cli.main import main\nimport sys\nsys.argv = ['digit-search', 'run', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass",
    ],
)
def test_import_search_and_help_load_no_torch_optuna_or_ray(code):
    check = (
        code
        + "\nimport sys\nloaded = [m for m in ('torch', 'optuna', 'ray', 'sqlalchemy', 'plotly') if m in sys.modules]\nassert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=ROOT, capture_output=True, timeout=60)


def test_each_command_loads_only_its_own_stage(tmp_path):
    """predict needs torch but never Optuna, SQLAlchemy, plotly or Ray (the study database is not involved)."""
    check = (
        "import sys\nfrom search.cli.main import main\n"
        "assert main(['predict', 'missing.png']) == 2\n"
        "loaded = [m for m in ('optuna', 'sqlalchemy', 'plotly', 'ray') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=tmp_path, capture_output=True, timeout=120)


def test_the_package_exposes_the_whole_api_lazily():
    import search
    import search.api

    assert {name for name, module in search._API.items() if module == "search.api"} == set(search.api.__all__)
    for name in search._API:
        assert getattr(search, name) is not None
