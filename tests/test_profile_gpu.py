"benchmarks/performance/profile_gpu.py on the CPU: the script the next lent GPU runs (tools/gpu_check.sh step 4) works, and bad input says so in one line."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "performance" / "profile_gpu.py"

def _run(tmp_path, *args):
    env = {**os.environ, "CELLNB_RESULTS_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)

def test_profile_gpu_cpu_check_writes_every_row(tmp_path):
    r = _run(tmp_path, "--device", "cpu", "--batches", "1,2", "--train-bs", "4")
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "profile_gpu.json").read_text())
    assert set(d["forward"]) == {"custom_vit/bs1", "custom_vit/bs2", "vit_tiny/bs1", "vit_tiny/bs2"}
    assert set(d["train_step"]) == {"fastai Adam (cellnb)", "torch AdamW foreach"}   # fused AdamW needs CUDA
    for row in [*d["forward"].values(), *d["train_step"].values()]:
        assert row["ms"] > 0 and len(row["top"]) == 5 and all(ms >= 0 for _, ms in row["top"])
    assert d["forward"]["custom_vit/bs2"]["ms_per_patch"] == pytest.approx(d["forward"]["custom_vit/bs2"]["ms"] / 2)

def test_profile_gpu_bad_input_is_one_line(tmp_path):
    r = _run(tmp_path, "--device", "cpu", "--batches", "1,x")
    assert r.returncode != 0 and "must be comma-separated integers" in r.stderr and "Traceback" not in r.stderr, r.stderr
    if not torch.cuda.is_available():
        r = _run(tmp_path, "--device", "cuda")
        assert r.returncode != 0 and "torch sees no GPU" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "profile_gpu.json").exists()
