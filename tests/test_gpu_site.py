"""tools/gpu_site.sh, the wheel install both GPU scripts share (tools/gpu_check.sh, tools/gpu_crchisto.sh), on the CPU:
the carried wheels land in the site folder without an index and import from PYTHONPATH; no wheels is one line, rc 2."""
import os, subprocess, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _wheel(folder: Path, name="cellnb_site_probe", version="0.1"):
    "A minimal pure-Python wheel (module, METADATA, WHEEL, RECORD) written by hand: no build backend, no network."
    folder.mkdir(parents=True, exist_ok=True)
    di = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 'from the carried wheel'\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{di}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{di}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for f, text in files.items(): z.writestr(f, text)

def _gpu_site(cwd: Path, tmp_path: Path, smi="echo 'GPU 0: stand-in for the lent GPU'"):
    bin_ = tmp_path / "bin"; bin_.mkdir(exist_ok=True)
    (bin_ / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n"); (bin_ / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PY": sys.executable, "GPU_SITE": str(tmp_path / "site"), "PATH": f"{bin_}:{os.environ['PATH']}"}
    script = (f"set -uo pipefail; source {ROOT / 'tools' / 'gpu_site.sh'}; gpu_site || exit $?; "   # under the callers' shell options
              '"$PY" -c "import cellnb_site_probe as m, os; print(m.VALUE); print(os.environ[\'PYTHONPATH\'])"')
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

def test_gpu_site_installs_the_carried_wheels_offline(tmp_path):
    work = tmp_path / "checkout"; _wheel(work / ".whl")
    r = _gpu_site(work, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "GPU 0: stand-in for the lent GPU" and lines[1] == "from the carried wheel"
    assert lines[2] == f"{tmp_path / 'site'}:{work}"    # the site folder first, then the checkout (cellnb itself)

def test_gpu_site_without_wheels_says_what_to_do(tmp_path):
    work = tmp_path / "checkout"; work.mkdir()
    r = _gpu_site(work, tmp_path)
    assert r.returncode == 2 and r.stdout.strip() == "no wheels in .whl/: run 'make gpu-wheels' here and carry .whl"
    assert not (tmp_path / "site").exists()

def test_gpu_site_without_a_gpu_says_so(tmp_path):
    work = tmp_path / "checkout"; _wheel(work / ".whl")
    r = _gpu_site(work, tmp_path, smi="echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert r.returncode == 2 and r.stdout.strip().endswith("nvidia-smi failed: this machine shows no NVIDIA GPU; run the GPU scripts on a lent GPU machine")

def test_gpu_site_with_a_broken_wheel_stops(tmp_path):
    work = tmp_path / "checkout"; (work / ".whl").mkdir(parents=True)
    (work / ".whl" / "broken-0.1-py3-none-any.whl").write_bytes(b"not a zip archive")
    r = _gpu_site(work, tmp_path)
    assert r.returncode == 2 and "GPU 0" not in r.stdout

def test_both_gpu_scripts_install_through_gpu_site():
    "gpu_check.sh and gpu_crchisto.sh source gpu_site.sh and stop when it fails; neither installs wheels on its own."
    for name in ("gpu_check.sh", "gpu_crchisto.sh"):
        text = (ROOT / "tools" / name).read_text()
        assert "source tools/gpu_site.sh; gpu_site || exit 2" in text and "pip install" not in text, name
