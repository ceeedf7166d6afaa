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
