#!/usr/bin/env python3
"""The wide_mnist table of docs/SCALING.md from the runs' JSON lines (`--json FILE`).

    python3 scripts/scaling_report.py docs/scaling-runs/results.jsonl
"""
import json
import sys


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    order = {"Dense": 0, "Static": 1, "Set": 2, "Rigl": 3}
    rows.sort(key=lambda r: (r["width"], order.get(r["method"], 9), r["seed"]))
    print("| width W | method | seed | epochs | non-zeros | dense twin (f32 params) | peak RSS | "
          "s/epoch | s/step | s/update step (updates) | test accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mib = lambda b: b / 2**20
        dense = 4 * r["dense_params"]
        dense_s = f"{mib(dense) / 1024:.1f} GiB" if dense >= 2**30 else f"{mib(dense):.0f} MiB"
        upd = (f"{r['s_per_update_step']:.2f} ({r['updates']})" if r["updates"] else "-")
        print(f"| {r['width']} | {r['method'].lower()} | {r['seed']} | {r['epochs']} | "
              f"{r['nnz']:,} | {dense_s} | {mib(r['peak_rss']):.0f} MiB | {r['s_per_epoch']:.0f} | "
              f"{r['s_per_step']:.3f} | {upd} | {r['test_accuracy']:.2f}% |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/scaling-runs/results.jsonl")
