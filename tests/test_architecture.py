"""The house rules of docs/architecture.md, read from the source: which parts import which,
no import circle (lazy imports inside functions count), every package listed for the wheel,
and no module name repeating its folder's."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "sparse_attn_conformance"
PARTS = ("attention", "conformance", "contracts", "kernels", "nightly", "plugin", "reports",
         "strategies")


def _modules() -> dict[str, Path]:
    out = {PACKAGE: ROOT / PACKAGE / "__init__.py"}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join((PACKAGE, *rel.parts))
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The suite's modules `name` imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == PACKAGE:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_module_is_imported_back_by_what_it_imports():
    """No circle, however long: Tarjan's strongly connected components are all single."""
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


#: part -> the parts it must never import
FORBIDDEN = {
    "attention": {"kernels", "strategies", "conformance", "plugin", "reports", "nightly"},
    # the front ends build `attention.Attended`; attention reads formats and the LSE declaration
    "contracts": {"kernels", "strategies", "conformance", "plugin", "reports", "nightly"},
    "strategies": {"kernels", "conformance", "plugin", "reports", "nightly"},
    "reports": {"plugin", "nightly"},
}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_only_what_it_stands_on(part):
    wrong = sorted((m, d) for m, deps in GRAPH.items() if _part(m) == part
                   for d in deps if _part(d) in FORBIDDEN[part])
    assert wrong == []


def test_the_report_pages_stand_alone():
    """The JSON model, the HTML page and `python -m ...reports merge` read only the report;
    the collector (pytest's side) reads the recorder, the registry and the coverage."""
    wrong = sorted((m, d) for m, deps in GRAPH.items()
                   if _part(m) == "reports" and not m.endswith(".collector")
                   for d in deps if _part(d) != "reports")
    assert wrong == []


def test_v1_strategies_do_not_reach_into_v2():
    wrong = sorted((m, d) for m, deps in GRAPH.items() if ".strategies.v1" in m
                   for d in deps if ".strategies.v2" in d)
    assert wrong == []


def test_the_properties_reach_kernels_through_the_interface_and_registry():
    wrong = sorted((m, d) for m, deps in GRAPH.items() if _part(m) == "conformance"
                   for d in deps if _part(d) == "kernels"
                   and d not in (f"{PACKAGE}.kernels.interface", f"{PACKAGE}.kernels.registry"))
    assert wrong == []


def test_every_package_is_in_the_wheel_and_every_folder_is_a_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert listed == folders
    for part in PARTS:
        for folder in (ROOT / part).rglob("*"):
            if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
                assert (folder / "__init__.py").is_file(), folder
    assert config["package-dir"][PACKAGE] == PACKAGE
    assert {config["package-dir"][f"{PACKAGE}.{p}"] for p in PARTS} == set(PARTS)


def test_no_module_repeats_its_folders_name():
    wrong = [str(p.relative_to(ROOT)) for p in MODULES.values()
             if p.stem.startswith(p.parent.name + "_")]
    assert wrong == []
