#!/usr/bin/python3
"""Heat maps of a needle benchmark run: one PNG per (mode, task).

  /usr/bin/python3 bench/needle/plot_needle.py needle.json --out-dir plots/

Reads the JSON that qllm_needle_bench --out_json writes. Each map has the document length
(rows, growing downwards) against the needle depth (columns); the colour is the fraction of
correct answers (red 0 .. green 1) and the text the count. Skipped cells (full attention
beyond --full_max_tokens) are grey, failed cells are marked "err". Needs python3-matplotlib.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def length_name(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def plot(cells, mode, task, path, title_extra):
    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    acc = np.full((len(lengths), len(depths)), np.nan)
    text = [["" for _ in depths] for _ in lengths]
    for c in cells:
        i, j = lengths.index(c["length"]), depths.index(c["depth"])
        if c["skipped"]:
            text[i][j] = "skip"
        elif c["error"]:
            text[i][j] = "err"
        else:
            n = len(c["cases"])
            acc[i, j] = c["correct"] / n if n else np.nan
            text[i][j] = f"{c['correct']}/{n}"
    fig, ax = plt.subplots(figsize=(1.1 * len(depths) + 2.5, 0.55 * len(lengths) + 1.8))
    cmap = matplotlib.colormaps["RdYlGn"].copy()
    cmap.set_bad("#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
    ax.set_yticks(range(len(lengths)), [length_name(n) for n in lengths])
    ax.set_xlabel("needle depth")
    ax.set_ylabel("document tokens")
    for i in range(len(lengths)):
        for j in range(len(depths)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
    total = sum(c["correct"] for c in cells if not c["skipped"] and not c["error"])
    cases = sum(len(c["cases"]) for c in cells if not c["skipped"] and not c["error"])
    overall = f"{total}/{cases}" if cases else "-"
    ax.set_title(f"{mode}, {task}: {overall} correct{title_extra}", fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="qllm_needle_bench --out_json output")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    with open(args.json) as f:
        run = json.load(f)
    os.makedirs(args.out_dir, exist_ok=True)
    groups = {}
    for c in run["cells"]:
        groups.setdefault((c["mode"], c["task"]), []).append(c)
    extra = f" ({os.path.basename(run['model_dir'].rstrip('/'))})"
    for (mode, task), cells in sorted(groups.items()):
        path = os.path.join(args.out_dir, f"needle_{task}_{mode}.png")
        plot(cells, mode, task, path, extra)
        print(path)


if __name__ == "__main__":
    main()
