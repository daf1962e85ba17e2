#!/usr/bin/env python3
"""Table and curve data of scripts/generator-experiment.sh: reads RUNS/evals/*.json (eval-generator
--json) and writes RUNS/curves/<method>.jsonl ({"budget","fd","kid","accuracy", "*_sd"}, means
over the sampling seeds) and a Markdown table on stdout."""
import glob, json, os, statistics, sys

runs = sys.argv[1]
os.makedirs(os.path.join(runs, "curves"), exist_ok=True)
rows = {}
for path in glob.glob(os.path.join(runs, "evals", "*_*_*.json")):
    name, budget, seed = os.path.basename(path)[:-5].rsplit("_", 2)
    s = json.load(open(path))["samples"]
    rows.setdefault(name, {}).setdefault(int(budget), []).append(s)

ref = json.load(open(os.path.join(runs, "evals", "references.json")))
methods = [m for m in ("two-stage", "one-stage", "two-stage-real-layouts", "two-stage-repair", "two-stage-condnoise",
                       "two-stage-condnoise-repair") if m in rows]

def stat(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

def step_seconds(stage):
    """Seconds of each training step of a stage's run (its log.jsonl), by step."""
    out = {}
    path = os.path.join(runs, stage, "log.jsonl")
    if os.path.exists(path):
        for line in open(path):
            v = json.loads(line)
            if "step" in v and "seconds" in v:
                out[v["step"]] = v["seconds"]
    return out

secs = {st: step_seconds(st) for st in ("layout", "texture", "one-stage")}

def cpu(stage, steps):
    return sum(t for k, t in secs[stage].items() if k <= steps)

def budget_seconds(m, b):
    if m == "one-stage":
        return cpu("one-stage", b)
    if m == "two-stage-real-layouts":  # the texture model only: real layouts cost no training
        return cpu("texture", b * 3 // 4)
    if m.startswith("two-stage-condnoise"):
        secs.setdefault("texture-condnoise", step_seconds("texture-condnoise"))
        return cpu("layout", b // 4) + cpu("texture-condnoise", b * 3 // 4)
    return cpu("layout", b // 4) + cpu("texture", b * 3 // 4)

print("| training steps (budget) | method | training s (1 thread) | FD | KID | accuracy | seeds |")
print("|---|---|---|---|---|---|---|")
for m in methods:
    with open(os.path.join(runs, "curves", m + ".jsonl"), "w") as out:
        for b in sorted(rows[m]):
            ss = rows[m][b]
            line = {"budget": b}
            cells = []
            for key in ("fd", "kid", "accuracy"):
                mean, sd = stat([s[key] for s in ss])
                line[key], line[key + "_sd"] = mean, sd
                scale = 100 if key == "accuracy" else 1
                fmt = "{:.1f}" if key != "kid" else "{:.3f}"
                cells.append(fmt.format(mean * scale) + (" ± " + fmt.format(sd * scale) if len(ss) > 1 else ""))
            line["seconds"] = budget_seconds(m, b)
            out.write(json.dumps(line) + "\n")
            print(f"| {b} | {m} | {line['seconds']:.0f} | {cells[0]} | {cells[1]} | {cells[2]}% | {len(ss)} |")
print()
print(f"References ({ref['reference_images']} held-out images with mirrors): classifier accuracy on them "
      f"{100 * ref['real_accuracy']:.1f}%", end="")
for key, what in (("reconstructions", "their tokenizer reconstructions"), ("training_images", "the training images")):
    s = ref.get(key)
    if s:
        print(f"; {what}: FD {s['fd']:.1f}, KID {s['kid']:.3f}, accuracy {100 * s['accuracy']:.1f}%", end="")
print(".")
print()
last = {m: max(rows[m]) for m in methods}
print("Per-class accuracy at the last budget (mean over seeds):")
print()
names = [k for k, _ in rows[methods[0]][last[methods[0]]][0]["per_class"].items()]
print("| class | " + " | ".join(methods) + " |")
print("|---|" + "---|" * len(methods))
for k in names:
    cells = [f"{100 * statistics.mean(s['per_class'][k] for s in rows[m][last[m]]):.0f}%" for m in methods]
    print(f"| {k} | " + " | ".join(cells) + " |")
