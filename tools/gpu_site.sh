# Sourced by tools/gpu_check.sh and tools/gpu_crchisto.sh on a lent GPU machine, from the repository root, with $PY set.
# The machine's image lacks fastai and cellnb's other pure-Python dependencies and reaches no index, so `gpu_site`
# installs the wheels carried in .whl/ (`make gpu-wheels` here) into $GPU_SITE (default /tmp/site), puts it and the
# checkout on PYTHONPATH and names the GPUs. It returns 2, with one line saying what to do, when no wheels came along,
# when pip cannot install them, or when nvidia-smi sees no GPU.
gpu_site() {
    local site=${GPU_SITE:-/tmp/site}
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run 'make gpu-wheels' here and carry .whl"; return 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || return 2
    export PYTHONPATH="$site:$PWD"
    nvidia-smi -L || { echo "nvidia-smi failed: this machine shows no NVIDIA GPU; run the GPU scripts on a lent GPU machine"; return 2; }
}
