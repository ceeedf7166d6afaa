"README.md is rendered from nbs/index.ipynb (Quarto cannot run here); they must stay in step."
import subprocess, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent

def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"nb2readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout

def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT/".ci"/"run").read_text()
    assert "make test" in (ROOT/"README.md").read_text()

def test_guarantees_cite_tests_that_exist():
    "Each test the README's Guarantees cite (`tests/f.py::name`, then `::name` for the same file) is defined in that file."
    import re
    text = (ROOT/"README.md").read_text()
    guarantees = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    cited, missing = 0, []
    for bullet in guarantees.split("\n- "):
        f = None
        for m in re.finditer(r"`(tests/\w+\.py)?::(\w+)`", bullet):
            f = m.group(1) or f
            src = (ROOT/f).read_text()
            cited += 1
            if not re.search(rf"^def {m.group(2)}\(", src, re.M): missing.append(f"{f}::{m.group(2)}")
    assert cited >= 20 and not missing, missing
