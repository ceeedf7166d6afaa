"""Execute notebooks in place (cwd = the notebook's folder), keeping outputs, then nbdev-clean them.

Usage: python tools/run_nb.py nbs/01_data.ipynb [more.ipynb ...] [--timeout 1800] [--skip-slow]
--skip-slow leaves the cells flagged `#| slow` unexecuted, with the outputs they hold (from their last full run).
"""
import sys, subprocess
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def _is_slow(cell): return cell.cell_type == "code" and cell.source.lstrip().startswith("#| slow")

def run(path, timeout=1800, skip_slow=False):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    kept = {i: (c.source, c.outputs) for i, c in enumerate(nb.cells) if skip_slow and _is_slow(c)}
    for i in kept: nb.cells[i].source = ""
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, (src, outs) in kept.items(): nb.cells[i].source, nb.cells[i].outputs = src, outs
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / "nbdev-clean"), "--fname", str(path)], check=True)
    print(f"executed {path}" + (f" ({len(kept)} slow cells kept as they were)" if kept else ""))

if __name__ == "__main__":
    args = sys.argv[1:]
    timeout, skip_slow = 1800, "--skip-slow" in args
    if skip_slow: args.remove("--skip-slow")
    if "--timeout" in args:
        i = args.index("--timeout"); timeout = int(args[i + 1]); del args[i:i + 2]
    for p in args: run(p, timeout, skip_slow)
