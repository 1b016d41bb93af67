"""The package layers of docs/architecture.md hold: import-linter's contracts pass."""
import configparser
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout, r.stdout


def test_every_core_module_is_under_the_core_contract():
    """A new module in autodl_design/ is core, so the core contract must name it."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, ".importlinter"))
    listed = set(parser["importlinter:contract:core"]["source_modules"].split())
    core = {"autodl_design." + name[:-3]
            for name in os.listdir(os.path.join(ROOT, "autodl_design"))
            if name.endswith(".py") and name != "__init__.py"}
    assert listed == core


def test_a_broken_layer_is_reported(tmp_path):
    """The contracts can fail: a core module importing the search layer breaks them."""
    import shutil
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "log", "*.pyc"))
    ops = copy / "autodl_design" / "ops.py"
    ops.write_text(ops.read_text() + "\nfrom autodl_design.search import loop  # noqa\n")
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(copy)))
    assert r.returncode != 0
    assert "autodl_design.ops -> autodl_design.search" in r.stdout


def test_search_package_functions_are_short():
    """The loop only schedules: no function of autodl_design/search/ is over 60 lines."""
    import ast
    folder = os.path.join(ROOT, "autodl_design", "search")
    long = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append("%s:%s (%d lines)" % (name, node.name, lines))
    assert not long, long
