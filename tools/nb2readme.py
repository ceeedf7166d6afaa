"""Render nbs/index.ipynb to README.md (Quarto, which nbdev-readme needs, cannot be installed here).

Markdown cells are copied, code cells become ```python blocks with their text outputs, `#| hide` cells and
nbdev directives are dropped. `--check` exits 1 when README.md is not what the notebook renders to.
Usage: python tools/nb2readme.py [--check]
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by tools/nb2readme.py: edit the notebook, then run `make readme`. -->\n\n"

def _src(cell): return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

def _outputs(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream": out.append("".join(o["text"]))
        elif "data" in o and "text/markdown" in o["data"]: out.append(("MD", "".join(o["data"]["text/markdown"])))
        elif "data" in o and "text/plain" in o["data"]: out.append("".join(o["data"]["text/plain"]))
    return out

def render(nb_path=ROOT/"nbs"/"index.ipynb") -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb["cells"]:
        src = _src(c)
        if c["cell_type"] == "markdown":
            parts.append(src.strip()); continue
        if c["cell_type"] != "code": continue
        lines = src.splitlines()
        if any(l.strip() in ("#| hide", "#|hide") for l in lines): continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if code: parts.append(f"```python\n{code}\n```")
        for o in _outputs(c):
            if isinstance(o, tuple): parts.append(o[1].strip())
            elif o.strip(): parts.append(f"```\n{o.rstrip()}\n```")
    return HEADER + "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    readme, text = ROOT/"README.md", render()
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of step with nbs/index.ipynb: run `make readme` and commit both")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(text); print("wrote README.md")
