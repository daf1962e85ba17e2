"""Encode + decode of one photo, official GPSToken (PyTorch, CPU) vs `gpstoken reconstruct`, for
scripts/compare/m128_forward.sh.

  m128_forward_driver.py forward OFFICIAL CONFIG.yaml IMAGE THREADS REPS
      The official model of CONFIG (random init, eval mode, no_grad, torch.set_num_threads), and
      the official inference path on one photo: preprocessing (PIL load, shortest side to 256,
      centre crop 256, grey image, Algorithm 1 by the official `adaptive_initialize` of
      OFFICIAL/datasets/adaptivegps.py), then `encode` and `decode` as inference_gsptoken.py calls
      them. One pass (the warm-up; for REPS = 0 the whole work of the process), then REPS timed
      passes; prints one JSON line: medians of wall and process CPU seconds per pass, split
      into preprocessing (with Algorithm 1) and encode + decode.
  m128_forward_driver.py timed CMD...
      Runs CMD and prints one JSON line: its wall seconds from spawn to exit, its user + sys CPU
      seconds (wait4), and for every stdout line the wall and CPU seconds (/proc/PID/stat) at
      which it arrived (`gpstoken reconstruct --json` on a folder prints one line per photo, so
      the gaps between lines are the per-photo times with the weights already loaded).
  m128_forward_driver.py table RESULTS.jsonl
      The markdown table (medians over rounds, ratio official / ours).

Preprocessing: the official dataset class uses albumentations SmallestMaxSize + CenterCrop; here
the same steps are written with cv2.resize (INTER_LINEAR, the albumentations default) as
partition_driver.py does, so albumentations is not needed. The official renderer is a CUDA
extension (gscuda); on the CPU it is replaced by the dense PyTorch stand-in of
train_step_driver.py (a 64x64 render of 128 Gaussians: a negligible share of the pass).
Everything else is the official code, imported from the OFFICIAL checkout at run time.
"""
import json
import os
import statistics
import subprocess
import sys
import time


def preprocess(image_path, size=256):
    """ImagePaths.preprocess_image with hflip off: RGB u8, shortest side to `size`, centre crop,
    to [-1, 1] float32."""
    import cv2
    import numpy as np
    from PIL import Image

    image = Image.open(image_path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    rgb = np.array(image).astype(np.uint8)
    h, w = rgb.shape[:2]
    s = size / min(h, w)
    nh, nw = int(np.round(h * s)), int(np.round(w * s))
    if (nh, nw) != (h, w):
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    oy, ox = (nh - size) // 2, (nw - size) // 2
    rgb = rgb[oy:oy + size, ox:ox + size]
    return (rgb / 127.5 - 1.0).astype(np.float32)


def forward(official, config, image_path, threads, reps):
    import numpy as np
    import torch
    import yaml

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from partition_driver import load_official as load_adaptivegps
    from train_step_driver import load_official

    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    torch.manual_seed(0)
    cfg = yaml.safe_load(open(config))["model"]
    gps, dec = cfg["gpsconfig"], cfg["decoderconfig"]
    with open(os.devnull, "w") as devnull:  # DecoderNP prints its z shape
        stdout, sys.stdout = sys.stdout, devnull
        model = load_official(official)(gps, dec)
        sys.stdout = stdout
    model.eval()
    # The official Algorithm 1 (its dataset base class, which needs albumentations, stubbed).
    adaptive_initialize = load_adaptivegps(os.path.join(official, "datasets", "adaptivegps.py")).adaptive_initialize

    def one_pass():
        t0, c0 = time.perf_counter(), time.process_time()
        # AdaptiveGPSDataset.__getitem__ for one 256x256 patch (data_size 256: _np = 1)
        img = preprocess(image_path)
        grey = 0.299 * img[:, :, 0] + 0.587 * img[:, :, 1] + 0.114 * img[:, :, 2]
        gpscodes, regions = adaptive_initialize(gps["gps_num"], img=grey, minhw=8, weight=gps["gps_adaptive_w"])
        t1, c1 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            x = torch.from_numpy(img)[None].permute(0, 3, 1, 2).contiguous().float()
            init = torch.from_numpy(gpscodes)[None].float()
            roi = torch.from_numpy(regions)[None]
            tokens = model.encode(x, init_gpscodes=init, regions=roi)
            t2, c2 = time.perf_counter(), time.process_time()
            xrec = model.decode(tokens, _np=1)
            out = ((xrec[0].clamp(-1, 1).numpy().transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
        t3, c3 = time.perf_counter(), time.process_time()
        assert out.shape == (256, 256, 3)
        return {"prep": (t1 - t0, c1 - c0), "encode": (t2 - t1, c2 - c1), "decode": (t3 - t2, c3 - c2),
                "total": (t3 - t0, c3 - c0)}

    first = one_pass()
    passes = [one_pass() for _ in range(reps)] or [first]
    med = {k: [round(statistics.median(p[k][i] for p in passes), 4) for i in (0, 1)] for k in first}
    print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "threads": threads, "reps": reps,
                      "wall": {k: v[0] for k, v in med.items()}, "cpu": {k: v[1] for k, v in med.items()},
                      "renderer": "dense stand-in (train_step_driver.dense_render)", "torch": torch.__version__}))


def cpu_seconds(pid):
    """utime + stime of a live process (all its threads), in seconds."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append({"wall": round(time.perf_counter() - t0, 4), "cpu": cpu_seconds(proc.pid), "text": line.strip()})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed ({os.waitstatus_to_exitcode(status)})")
    print(json.dumps({"wall": round(wall, 4), "cpu": round(usage.ru_utime + usage.ru_stime, 4),
                      "user": round(usage.ru_utime, 4), "sys": round(usage.ru_stime, 4),
                      "maxrss_mib": usage.ru_maxrss // 1024, "lines": lines}))


def table(results):
    rows = [json.loads(line) for line in open(results)]

    def med(kind, key):
        return statistics.median(r[key] for r in rows if r["kind"] == kind)

    def gaps(r):
        t = [(x["wall"], x["cpu"]) for x in r["lines"]]
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(t, t[1:])]

    # ours, model only: median gap between successive photos of the folder run (weights loaded,
    # first photo = warm-up), per round; then the median over rounds.
    for r in rows:
        if r["kind"] == "ours_folder":
            g = gaps(r)
            r["photo_wall"] = statistics.median(x[0] for x in g)
            r["photo_cpu"] = statistics.median(x[1] for x in g)
        if r["kind"] == "torch_forward":
            r["photo_wall"], r["photo_cpu"] = r["wall"]["total"], r["cpu"]["total"]
            r["encdec_wall"] = r["wall"]["encode"] + r["wall"]["decode"]
            r["encdec_cpu"] = r["cpu"]["encode"] + r["cpu"]["decode"]
            r["prep_wall"] = r["wall"]["prep"]
            r["enc_cpu"], r["dec_cpu"] = r["cpu"]["encode"], r["cpu"]["decode"]
    n = len([r for r in rows if r["kind"] == "ours_whole"])
    threads = next(r["threads"] for r in rows if r["kind"] == "torch_forward")
    tw, tc = med("torch_whole", "wall"), med("torch_whole", "cpu")
    ow, oc = med("ours_whole", "wall"), med("ours_whole", "cpu")
    tpw, tpc = med("torch_forward", "photo_wall"), med("torch_forward", "photo_cpu")
    opw, opc = med("ours_folder", "photo_wall"), med("ours_folder", "photo_cpu")
    print(f"| M128, one 256x256 photo, {threads} thread(s), median of {n} interleaved rounds | PyTorch wall s | ours wall s "
          "| ratio PyTorch/ours (wall) | PyTorch CPU s | ours CPU s | ratio (CPU) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| whole process (start to exit, one photo) | {tw:.2f} | {ow:.2f} | **{tw / ow:.2f}x** "
          f"| {tc:.2f} | {oc:.2f} | {tc / oc:.2f}x |")
    print(f"| model only: load + crop + Algorithm 1 + encode + decode of the photo, weights loaded, after a warm-up "
          f"| {tpw:.2f} | {opw:.2f} | **{tpw / opw:.2f}x** | {tpc:.2f} | {opc:.2f} | {tpc / opc:.2f}x |")
    print()
    print(f"PyTorch split (median): preprocessing + Algorithm 1 {med('torch_forward', 'prep_wall'):.3f} s, "
          f"encode + decode {med('torch_forward', 'encdec_wall'):.3f} s wall / {med('torch_forward', 'encdec_cpu'):.3f} s CPU "
          f"(encode {med('torch_forward', 'enc_cpu'):.2f}, decode {med('torch_forward', 'dec_cpu'):.2f} s CPU); "
          f"official model {next(r['params'] for r in rows if 'params' in r):,} parameters. "
          f"Ours peak RSS {med('ours_whole', 'maxrss_mib'):.0f} MiB, user {med('ours_whole', 'user'):.2f} s + "
          f"sys {med('ours_whole', 'sys'):.2f} s; PyTorch whole process peak RSS {med('torch_whole', 'maxrss_mib'):.0f} MiB.")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "forward":
        o, c, i, t, r = sys.argv[2:7]
        forward(o, c, i, int(t), int(r))
    elif mode == "timed":
        timed(sys.argv[2:])
    elif mode == "table":
        table(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")
