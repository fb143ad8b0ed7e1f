"""The house rules that keep the code easy to extend: small modules, short functions, a public API."""

import ast
import subprocess
import sys
from pathlib import Path

import hf_hybrid

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
CODE_FOLDERS = ("hf_hybrid", "benchmarks", "recipes", "scripts", "spaces", "metrics")


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_module_of_the_package_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _python_files("hf_hybrid")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_outside_tests_is_over_60_lines():
    long = []
    for path in _python_files(*CODE_FOLDERS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_public_api_names_resolve():
    assert "Encoder" in hf_hybrid.__all__ and "train" in hf_hybrid.__all__
    for name in hf_hybrid.__all__:
        assert getattr(hf_hybrid, name) is not None, name


def test_importing_the_package_loads_no_heavy_library():
    code = "import sys, hf_hybrid, hf_hybrid.cli; print(sorted({'torch', 'mteb', 'gradio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
