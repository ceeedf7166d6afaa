"""Execute notebooks in place (cwd = the notebook's folder), keeping outputs, then nbdev-clean them.

Usage: python tools/run_nb.py nbs/01_data.ipynb [more.ipynb ...] [--timeout 1800]
"""
import sys, subprocess
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def run(path, timeout=1800):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / "nbdev-clean"), "--fname", str(path)], check=True)
    print(f"executed {path}")

if __name__ == "__main__":
    args = sys.argv[1:]
    timeout = 1800
    if "--timeout" in args:
        i = args.index("--timeout"); timeout = int(args[i + 1]); del args[i:i + 2]
    for p in args: run(p, timeout)
