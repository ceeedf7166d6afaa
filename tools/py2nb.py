"""Convert a percent-format script (`# %%` code cells, `# %% [markdown]` markdown cells) into a notebook.

Used by developers to draft notebooks; the notebook in nbs/ is the source afterwards.
Usage: python tools/py2nb.py draft.py nbs/NN_name.ipynb
"""
import json, re, sys
from pathlib import Path

def parse(text):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        src = "\n".join(buf).strip("\n")
        if kind == "markdown":
            src = "\n".join(re.sub(r"^# ?", "", l) if l.startswith("#") else l for l in src.splitlines())
        if src.strip(): cells.append((kind, src))
    for line in text.splitlines():
        m = re.match(r"^# %%(.*)$", line)
        if m:
            flush(); buf = []
            kind = "markdown" if "[markdown]" in m.group(1) else "code"
            tags = re.findall(r'tags=\[([^\]]*)\]', m.group(1))
            if kind == "code" and tags: buf.append(f"__TAGS__{tags[0]}")
            continue
        if kind is None: kind = "code"
        buf.append(line)
    flush()
    return cells

def to_nb(cells):
    out = []
    for kind, src in cells:
        meta = {}
        if src.startswith("__TAGS__"):
            first, _, src = src.partition("\n")
            meta["tags"] = [t.strip().strip("'\"") for t in first[len("__TAGS__"):].split(",") if t.strip()]
        lines = src.splitlines(keepends=True)
        c = {"cell_type": kind, "metadata": meta, "source": lines}
        if kind == "code": c.update(execution_count=None, outputs=[])
        out.append(c)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}

if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nb = to_nb(parse(Path(src).read_text()))
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dst}: {len(nb['cells'])} cells")
