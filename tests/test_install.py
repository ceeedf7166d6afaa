"""The install step: a disk too small for torch's CUDA build fails at once with one clear line, before pip runs; an
installed venv is not installed again while pyproject.toml's content stays the same."""
import hashlib, os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def test_install_refuses_a_full_disk_clearly(tmp_path):
    for f in ("Makefile", "pyproject.toml"): shutil.copy(ROOT/f, tmp_path/f)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path/".venv")], check=True)
    r = subprocess.run(["make", "install", "MIN_FREE_GB=1e12"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "GB free on this disk; installing cellnb needs about 7-9 GB" in r.stderr, r.stderr
    assert "pip install" not in r.stdout and not list((tmp_path/".venv").glob(".cellnb-installed*"))

def test_install_stamp_follows_the_content_of_pyproject(tmp_path):
    "nbdev-export rewrites pyproject.toml unchanged: that must not reinstall; a changed pyproject.toml must."
    for f in ("Makefile", "pyproject.toml"): shutil.copy(ROOT/f, tmp_path/f)
    would_install = lambda: "pip install" in subprocess.run(["make", "-n", "install"], cwd=tmp_path, capture_output=True,
                                                            text=True, timeout=60, check=True).stdout
    assert would_install()                                       # a fresh checkout installs
    sha = hashlib.sha256((tmp_path/"pyproject.toml").read_bytes()).hexdigest()[:16]
    (tmp_path/".venv").mkdir(); (tmp_path/".venv"/f".cellnb-installed-{sha}").touch()
    assert not would_install()
    t = (tmp_path/"pyproject.toml").stat().st_mtime + 60
    os.utime(tmp_path/"pyproject.toml", (t, t))                  # rewritten later with the same content
    assert not would_install()
    with open(tmp_path/"pyproject.toml", "a") as f: f.write("\n# a new dependency\n")
    assert would_install()
