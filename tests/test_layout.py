"""The codebase's shape, checked: one-way layers (import-linter contracts in pyproject.toml, run on
the installed layout), no function over 80 lines and no file over 500 outside tests, and no
development tool in the installed package."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPACKAGES = ("models", "converters", "device", "optimize")


def _installed_layout(dest):
    """The package as pip installs it: edgekit/ with the top-level folders as its subpackages."""
    shutil.copytree(
        os.path.join(ROOT, "edgekit"), os.path.join(dest, "edgekit"), ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in SUBPACKAGES:
        shutil.copytree(
            os.path.join(ROOT, name), os.path.join(dest, "edgekit", name), ignore=shutil.ignore_patterns("__pycache__")
        )


def test_import_contracts_hold(tmp_path):
    _installed_layout(tmp_path)
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    proc = subprocess.run(
        [lint, os.path.join(ROOT, "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "Analyzed" in proc.stdout


def test_a_layer_violation_is_caught(tmp_path):
    # the contracts do catch what they are for: the converters importing optimize
    _installed_layout(tmp_path)
    with open(tmp_path / "edgekit" / "converters" / "verify.py", "a") as f:
        f.write("\nimport edgekit.optimize  # noqa\n")
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    proc = subprocess.run(
        [lint, os.path.join(ROOT, "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        timeout=300,
    )
    assert proc.returncode == 1 and "edgekit.converters.verify -> edgekit.optimize" in proc.stdout


def _sources():
    for top in ("edgekit", "tools", "benchmarks") + SUBPACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


# One file by design, over the cap: the board-side harness runs as a script copied alone to a board
# (inference, several inputs and outputs, board facts, its CLI).
LONGER = {os.path.join("device", "board", "harness.py"): 660}


@pytest.mark.parametrize("limit_file, limit_function", [(500, 80)])
def test_no_file_over_500_lines_and_no_function_over_80(limit_file, limit_function):
    too_long = []
    for path in _sources():
        with open(path, encoding="utf-8") as f:
            src = f.read()
        rel = os.path.relpath(path, ROOT)
        if src.count("\n") > LONGER.get(rel, limit_file):
            too_long.append(f"{rel}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit_function:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, too_long


def test_development_tools_are_not_in_the_package():
    for name in ("readme.py", "techniques.py", "loopback.py", "postgres.py"):
        for top in ("edgekit",) + SUBPACKAGES:
            assert not os.path.exists(os.path.join(ROOT, top, name)), f"{top}/{name} would be installed"
