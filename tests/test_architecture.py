"""The package's shape: no import cycles, a DAG build without torch, peft or transformers, one artifact contract."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import peft

from fedumm import artifacts

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedumm"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The fedumm modules ``path`` imports anywhere in its body (function-level imports included):
    ``from a.b import c`` counts as a.b.c when that is a module, else as a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "fedumm.federated.strategies.scaffold" in graph["fedumm.federated.strategies"]
    assert find_cycle(graph) is None


def test_building_the_dag_imports_neither_peft_nor_transformers() -> None:
    """Run the workflow's own imports (every `from fedumm ...` line of the rule files) and load the
    default config's experiments in a fresh interpreter, then look at what got imported: not even
    torch (fedumm.lazy), which would cost every `snakemake` invocation seconds and ~190 MB."""
    lines = [
        line.strip()
        for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk"))
        for line in smk.read_text().splitlines()
        if re.match(r"\s*(from fedumm|import fedumm)", line)
    ]
    assert any("config" in line for line in lines)
    program = "\n".join([
        "import json, sys, yaml",
        *lines,
        "from fedumm import config as c",
        f"experiments = c.load_experiments(c.load_yaml({str(ROOT / 'config/config.yaml')!r}), "
        f"c.load_yaml({str(ROOT / 'workflow/schemas/config.schema.yaml')!r}))",
        "assert experiments",
        "print(json.dumps(sorted(m for m in ('peft', 'transformers', 'matplotlib', 'torch', 'safetensors') if m in sys.modules)))",
    ])
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(result.stdout) == []


def test_adapter_file_names_are_peft_s() -> None:
    assert artifacts.ADAPTER_CONFIG == peft.utils.CONFIG_NAME
    assert artifacts.ADAPTER_WEIGHTS == peft.utils.SAFETENSORS_WEIGHTS_NAME


def test_round_paths() -> None:
    assert artifacts.round_dir("results", "exp", 7) == "results/exp/round_007"
    assert artifacts.round_dir("results", "{exp}", "{r}") == "results/{exp}/round_{r}"
    assert artifacts.CLIENT_INDEX.match(artifacts.client_index_name(12)).group(1) == "012"
