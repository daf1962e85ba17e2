#!/usr/bin/env python3
"""Paired adaptive-vs-grid statistics from the per-image eval lines that scripts/ablation-strata.sh writes.

    scripts/ablation_table.py OUT_DIR [OUT_DIR...]          # one compact row per folder, weights and crop
    scripts/ablation_table.py --full OUT_DIR                # every metric with means, differences and wins

A difference is adaptive minus grid per photo, averaged over the photos, ± its standard error; "wins" counts
the photos where the adaptive model is higher. Everything is read from the eval outputs; nothing is assumed.
"""
import json
import math
import sys

METRICS = [("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("rich_psnr", "PSNR texture-rich quarter"),
           ("flat_psnr", "PSNR flat quarter"), ("rich_detail", "detail kept, texture-rich")]


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith('{"image"')]


def paired(a, g, key):
    d = [x[key] - y[key] for x, y in zip(a, g)]
    n = len(d)
    m = sum(d) / n
    se = math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1) / n)
    return (sum(x[key] for x in a) / n, sum(y[key] for y in g) / n, m, se, sum(v > 0 for v in d), n)


def pairs(out):
    for w in ["raw", "ema"]:
        for size in ["64", "256"]:
            a = rows(f"{out}/adaptive.{w}.{size}.jsonl")
            g = rows(f"{out}/grid.{w}.{size}.jsonl")
            if [r["image"] for r in a] != [r["image"] for r in g]:
                sys.exit(f"{out}: the adaptive and grid evaluations list different photos")
            yield ("raw" if w == "raw" else "EMA"), size, a, g


def main(argv):
    if argv and argv[0] == "--full":
        out = argv[1]
        print("| weights | crop | metric | adaptive | grid | adaptive - grid (mean ± s.e.) | adaptive wins |")
        print("|---|---|---|---|---|---|---|")
        for label, size, a, g in pairs(out):
            for key, name in METRICS:
                ma, mg, m, se, wins, n = paired(a, g, key)
                print(f"| {label} | {size} | {name} | {ma:.4f} | {mg:.4f} | {m:+.4f} ± {se:.4f} | {wins}/{n} |")
        return
    print("| run | weights | crop | PSNR adaptive / grid (dB) | PSNR diff (wins) | texture-rich diff | flat diff"
          " | detail kept diff (wins) |")
    print("|---|---|---|---|---|---|---|---|")
    for out in argv:
        for label, size, a, g in pairs(out):
            ma, mg, m, se, wins, n = paired(a, g, "psnr")
            _, _, rm, rse, _, _ = paired(a, g, "rich_psnr")
            _, _, fm, fse, _, _ = paired(a, g, "flat_psnr")
            _, _, dm, dse, dwins, _ = paired(a, g, "rich_detail")
            print(f"| {out.rstrip('/').split('/')[-1]} | {label} | {size} | {ma:.2f} / {mg:.2f} | {m:+.2f} ± {se:.2f}"
                  f" ({wins}/{n}) | {rm:+.2f} ± {rse:.2f} | {fm:+.2f} ± {fse:.2f} | {dm:+.4f} ± {dse:.4f} ({dwins}/{n}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
