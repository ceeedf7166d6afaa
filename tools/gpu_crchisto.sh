#!/usr/bin/env bash
# Real-data entries of the GPU CV grid (benchmarks/crchisto_study/crchisto_cv_gpu.yaml) in one call of a lent GPU machine.
#
# CRCHisto cannot travel as it lies: its 100 BMPs are 75 MB, over the 64 MiB a device call may carry, and its licence
# (research use only) forbids a copy in the repository. So `prepare` writes a lossless WebP copy (about 36 MB, every
# pixel checked against the BMP) OUTSIDE the repo, in $CRC_WEBP, and an ignored link .crchisto_webp to it; the call's
# carry names the path through that link, and on the GPU machine this script decodes it back to BMPs in /tmp/crchisto.
#
#   make gpu-wheels && bash tools/gpu_crchisto.sh prepare     # here, once (about 4 min on 2 cores)
#   run(command="bash tools/gpu_crchisto.sh KEY[,KEY...]", carry=[".whl", ".crchisto_webp/Classification"], timeout_s=550)
#   bash tools/gpu_crchisto.sh clean                          # here, afterwards: removes the copy and the link
#
# KEYs are entry keys of the config (CONFIG=..., default crchisto_cv_gpu.yaml), run one process each, in order, each
# under what is left of DEADLINE_S (default 480 s from the start). An entry writes its row when both folds are done, so
# a cut-off entry leaves the finished ones in $OUT/<config>.json, which starts as the committed results JSON so earlier
# rows stay. The fold probabilities come back too ($OUT/<config>_probs.tgz: predictions and each fold's config.json, no
# image data); here `tar xzf <config>_probs.tgz -C benchmarks/runs`, then `crchisto_cv.py --compare A,<config>:KEY` pairs
# them with a CPU entry on the same test cells. GPU_TESTS="pytest args" runs those tests first. FT_STEP=1 first times the
# full_ft step of EfficientNet-Lite0 in NCHW against NHWC on CRCHisto cells (bench_finetune_step.py, batch 256; 1.98x on
# the CPU), its JSON in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
CRC_WEBP=${CRC_WEBP:-/tmp/cellnb-crchisto-webp}

if [ "${1:-}" = prepare ]; then
    PY=${PY:-.venv/bin/python}
    SRC=${CELLNB_CRCHISTO:-../shared/data/crchisto}
    [ -d "$SRC/Classification" ] || { echo "gpu_crchisto prepare: no $SRC/Classification; set CELLNB_CRCHISTO to the CRCHisto folder"; exit 2; }
    case "$(realpath -m "$CRC_WEBP")/" in "$(realpath .)"/*) echo "gpu_crchisto prepare: CRC_WEBP must lie outside the repository (CRCHisto's licence)"; exit 2;; esac
    $PY - "$SRC/Classification" "$CRC_WEBP/Classification" <<'EOF' || exit 2
import sys, shutil
from multiprocessing import Pool
from pathlib import Path
import numpy as np
from PIL import Image
src, dst = map(Path, sys.argv[1:])
def one(d):
    out = dst/d.name; out.mkdir(parents=True, exist_ok=True)
    for m in d.glob('*.mat'): shutil.copy(m, out)
    rgb, w = np.asarray(Image.open(d/f'{d.name}.bmp').convert('RGB')), out/f'{d.name}.webp'
    if not w.exists(): Image.fromarray(rgb).save(w, 'WEBP', lossless=True, quality=100, method=6)
    if not np.array_equal(np.asarray(Image.open(w).convert('RGB')), rgb): w.unlink(); return f'{w}: not lossless'
with Pool() as p: bad = [b for b in p.map(one, sorted(x for x in src.iterdir() if x.is_dir())) if b]
if bad: sys.exit('; '.join(bad))
EOF
    grep -qx '/.crchisto_webp' .git/info/exclude 2>/dev/null || echo '/.crchisto_webp' >> .git/info/exclude
    ln -sfn "$CRC_WEBP" .crchisto_webp
    echo "lossless copy of $(ls "$CRC_WEBP/Classification" | wc -l) images, $(du -sh "$CRC_WEBP" | cut -f1), behind .crchisto_webp"; exit 0
fi
if [ "${1:-}" = clean ]; then rm -rf "$CRC_WEBP" .crchisto_webp; echo "removed $CRC_WEBP and .crchisto_webp"; exit 0; fi
[ -n "${1:-}" ] || { echo "usage: bash tools/gpu_crchisto.sh prepare | clean | KEY[,KEY...]"; exit 2; }

export OUT=${OUT:-/tmp/gpu_crchisto}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_crchisto.log") 2>&1
PY=${PY:-python3}; CONFIG=${CONFIG:-benchmarks/crchisto_study/crchisto_cv_gpu.yaml}; DEADLINE_S=${DEADLINE_S:-480}
ls .crchisto_webp/Classification/img1/img1.webp >/dev/null 2>&1 || { echo "no .crchisto_webp/Classification: run 'bash tools/gpu_crchisto.sh prepare' here and carry it"; exit 2; }
source tools/gpu_site.sh; gpu_site || exit 2
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CELLNB_RESULTS_DIR="$OUT" CELLNB_CACHE_DIR=/tmp/cellnb-cache CELLNB_CRCHISTO=/tmp/crchisto
$PY - <<'EOF' || exit 2
from multiprocessing import Pool
from pathlib import Path
from PIL import Image
src, dst = Path('.crchisto_webp/Classification'), Path('/tmp/crchisto/Classification')
def one(d):
    out = dst/d.name; out.mkdir(parents=True, exist_ok=True)
    for m in d.glob('*.mat'): (out/m.name).write_bytes(m.read_bytes())
    Image.open(d/f'{d.name}.webp').convert('RGB').save(out/f'{d.name}.bmp')
with Pool() as p: n = len(p.map(one, sorted(x for x in src.iterdir() if x.is_dir())))
print(f'CRCHisto: {n} images decoded to {dst}')
EOF
stem=$(basename "$CONFIG" .yaml)
cp "benchmarks/results/$stem.json" "$OUT/" 2>/dev/null && echo "merging into the committed benchmarks/results/$stem.json"
[ -z "${GPU_TESTS:-}" ] || { echo "=== $(date -u +%H:%M:%S) pytest $GPU_TESTS"; eval timeout 120 $PY -m pytest -q -p no:cacheprovider $GPU_TESTS; }
if [ "${FT_STEP:-0}" = 1 ]; then
    echo "=== $(date -u +%H:%M:%S) bench_finetune_step (limit 60s)"; t0=$SECONDS
    timeout 60 $PY benchmarks/performance/bench_finetune_step.py --device cuda --batch 256 --repeats 10; echo "=== rc=$? in $((SECONDS - t0)) s"
fi
for key in ${1//,/ }; do
    left=$(( DEADLINE_S - SECONDS )); [ $left -gt 30 ] || { echo "=== no time left for $key"; continue; }
    echo; echo "=== $(date -u +%H:%M:%S) $key (limit ${left}s)"; t0=$SECONDS
    timeout $left $PY benchmarks/crchisto_study/crchisto_cv.py --config "$CONFIG" --only "$key" --resume --device cuda
    echo "=== rc=$? in $((SECONDS - t0)) s"
done
# the probabilities and the config.json beside each (its classes and crop), for crchisto_cv.py --compare here
( cd benchmarks/runs && find "$stem" \( -name "*.npy" -o -name config.json \) | tar czf "$OUT/${stem}_probs.tgz" -T - ) 2>/dev/null
echo; echo "=== done $(date -u +%H:%M:%S); files in $OUT:"; ls -la "$OUT"
