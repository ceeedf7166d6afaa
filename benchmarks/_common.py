"Shared plumbing for the benchmark scripts: machine description and the JSON they leave in benchmarks/results/."
import json, os, platform, datetime, sys
from pathlib import Path
import torch

# $CELLNB_RESULTS_DIR sends a run's JSON elsewhere (tools/gpu_check.sh: the GPU's figures do not overwrite the CPU's)
RESULTS = Path(os.environ.get("CELLNB_RESULTS_DIR") or Path(__file__).resolve().parent / "results")

def pearson_ci(x, y) -> dict | None:
    "Pearson r of y against x with its Fisher-z 95% CI and p-value; None below four points (no meaningful CI)."
    if len(x) < 4: return None
    from scipy import stats
    r = stats.pearsonr(x, y)
    ci = r.confidence_interval(0.95)
    return dict(r=float(r.statistic), ci=[float(ci.low), float(ci.high)], p=float(r.pvalue))

def machine() -> dict:
    "What the numbers were measured on."
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(cores=os.cpu_count(), torch_threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                gpu=gpu, python=sys.version.split()[0], torch=torch.__version__,
                date=datetime.date.today().isoformat())

def write_result(script: str, payload: dict) -> Path:
    "Write benchmarks/results/<script>.json (machine added) and return its path."
    from cellnb.core import atomic_write_json
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = RESULTS / f"{script}.json"
    atomic_write_json(p, {**payload, "machine": machine()})
    return p
