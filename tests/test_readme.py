"""The README's two commands are the ones CI and users run."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_COMMAND = "WITH_RAY=1 bash setup.sh && .venv/bin/python -m pytest -q tests"
MAIN_COMMAND = "bash setup.sh && .venv/bin/python main.py"


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [l for l in read(".ci/run").splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci == [TEST_COMMAND]
    readme = read("README.md")
    head = readme[:1500]
    assert TEST_COMMAND in head and MAIN_COMMAND in head


def test_readme_links_resolve():
    readme = read("README.md")
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" in target:
            continue
        assert os.path.exists(os.path.join(ROOT, target)), target
