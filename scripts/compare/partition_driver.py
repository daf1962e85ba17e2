#!/usr/bin/env python3
"""Side-by-side timing of Algorithm 1: the official `adaptive_initialize` against ours.

Driven by `partition.sh` (see there). Subcommands:
  prep OUTDIR IMAGE...           256x256 grey f32 inputs as the official data path makes them
  official ADAPTIVEGPS.PY GREY N REPS {plain,ipp}
                                 one process: time the official function, print one JSON line
  table RESULTS.jsonl            the markdown table (ratio of medians)

The official file is loaded from the caller's checkout at run time (nothing of it is copied
here); `torch` and the dataset base class it imports are stubbed, the function needs neither.
"""
import json
import statistics
import sys
import time
import types


def prep(outdir, images):
    import cv2
    import numpy as np
    from PIL import Image

    names = []
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        # SmallestMaxSize(256): cv2 INTER_LINEAR on u8, round-half-even new size; CenterCrop(256).
        s = 256 / min(h, w)
        nh, nw = int(np.round(h * s)), int(np.round(w * s))
        if (nh, nw) != (h, w):
            rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        oy, ox = (nh - 256) // 2, (nw - 256) // 2
        rgb = rgb[oy:oy + 256, ox:ox + 256]
        img = (rgb.astype(np.float64) / 127.5 - 1.0).astype(np.float32)
        grey = 0.299 * img[:, :, 0] + 0.587 * img[:, :, 1] + 0.114 * img[:, :, 2]
        assert grey.dtype == np.float32 and grey.shape == (256, 256)
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        grey.astype("<f4").tofile(f"{outdir}/{name}.f32")
        names.append(name)
    print(" ".join(names))


def load_official(path):
    import importlib.util

    sys.modules.setdefault("torch", types.ModuleType("torch"))
    pkg = types.ModuleType("gpsofficial")
    pkg.__path__ = []
    base = types.ModuleType("gpsofficial.base")
    base.ImagePaths = object
    sys.modules["gpsofficial"], sys.modules["gpsofficial.base"] = pkg, base
    spec = importlib.util.spec_from_file_location("gpsofficial.adaptivegps", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "gpsofficial"
    spec.loader.exec_module(mod)
    return mod


def official(path, grey_path, n, reps, mode):
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    cv2.setUseOptimized(mode == "ipp")
    mod = load_official(path)
    grey = np.fromfile(grey_path, dtype="<f4").reshape(256, 256)
    times = []
    for rep in range(reps + 2):
        t = time.perf_counter()
        _, regions = mod.adaptive_initialize(n, img=grey, minhw=8, weight=2.5)
        if rep >= 2:
            times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "reps": reps,
                      "boxes": regions.astype(np.float32).view(np.uint32).tolist()}))


def boxes_of(ranges):
    import numpy as np

    # Spec 3.4 (the RoI box of each region), to compare with the official output bit for bit.
    out = [[(x0 / 255 - 0.5) * 2, (y0 / 255 - 0.5) * 2, (x1 / 255 - 0.5) * 2, (y1 / 255 - 0.5) * 2]
           for y0, y1, x0, x1 in ranges]
    return np.array(out).astype(np.float32).view(np.uint32).tolist()


def table(results):
    rows = [json.loads(line) for line in open(results)]
    samples = list(dict.fromkeys(r["sample"] for r in rows))
    before = any(r["impl"] == "before" for r in rows)

    def med(impl, s=None):
        return statistics.median(r["median_ms"] for r in rows if r["impl"] == impl and s in (None, r["sample"]))

    head = "| sample | official, cv2 plain (ms) | official, cv2 default/IPP (ms) |"
    head += " ours, before (ms) | before vs plain |" if before else ""
    head += " ours (ms) | ours vs plain | ours vs default | regions = official plain |"
    print(head)
    print("|---" * head.count(" |") + "|")
    for s in samples + [None]:
        p, i, o = med("plain", s), med("ipp", s), med("ours", s)
        line = f"| {s or '**median**'} | {p:.2f} | {i:.2f} |"
        if before:
            b = med("before", s)
            line += f" {b:.2f} | {p / b:.1f}x |"
        if s is None:
            line += f" {o:.3f} | **{p / o:.1f}x** | **{i / o:.1f}x** | |"
        else:
            ours = next(r for r in rows if r["sample"] == s and r["impl"] == "ours")
            plain = next(r for r in rows if r["sample"] == s and r["impl"] == "plain")
            same = "yes" if boxes_of(ours["ranges"]) == plain["boxes"] else "**NO**"
            line += f" {o:.3f} | {p / o:.1f}x | {i / o:.1f}x | {same} |"
        print(line)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prep":
        prep(args[0], args[1:])
    elif cmd == "official":
        official(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit(f"unknown subcommand {cmd}")
