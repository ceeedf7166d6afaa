"The install step: a disk too small for torch's CUDA build fails at once with one clear line, before pip runs."
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def test_install_refuses_a_full_disk_clearly(tmp_path):
    for f in ("Makefile", "pyproject.toml"): shutil.copy(ROOT/f, tmp_path/f)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path/".venv")], check=True)
    r = subprocess.run(["make", "install", "MIN_FREE_GB=1e12"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "GB free on this disk; installing cellnb needs about 7-9 GB" in r.stderr, r.stderr
    assert "pip install" not in r.stdout and not (tmp_path/".venv"/".cellnb-installed").exists()
