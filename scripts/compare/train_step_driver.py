"""The official GPSToken model (PyTorch, CPU) for scripts/compare/train_step.sh.

  train_step_driver.py train OFFICIAL CONFIG.yaml INPUTS.f32 BATCH THREADS REPS
      2 warm-up steps, then REPS timed training steps (forward, MSE, backward, Adam with the
      official betas) on the batch that `train_step` wrote to INPUTS.f32; prints one JSON line
      (median wall seconds and process CPU seconds per step).

The official renderer is a CUDA extension (gscuda); on the CPU it is replaced by the dense
PyTorch expression of the same forward (spec 2.1: box support, unnormalised Gaussian, weighted
sum), with autograd for the backward. At the 16x16 render of cpu-tiny it is a small share of the
step. Everything else is the official code, imported from the OFFICIAL checkout.
"""
import json
import sys
import time
import types

import numpy as np
import torch
import yaml


def dense_render(sigmas, coords, colors, image_size, dmax=100):
    h, w = image_size[:2]
    xs = (torch.arange(w, dtype=torch.float64) * 2.0 / (w - 1) - 1.0).to(torch.float32)
    ys = (torch.arange(h, dtype=torch.float64) * 2.0 / (h - 1) - 1.0).to(torch.float32)
    sx, sy, rho = sigmas[:, 0, None, None], sigmas[:, 1, None, None], sigmas[:, 2, None, None]
    dx = xs[None, None, :] - coords[:, 0, None, None]  # [S, 1, W]
    dy = ys[None, :, None] - coords[:, 1, None, None]  # [S, H, 1]
    inside = (dx.abs() <= dmax * sx) & (dy.abs() <= dmax * sy)  # [S, H, W], no gradient
    q = dx * dx / (sx * sx) - 2.0 * rho * dx * dy / (sx * sy) + dy * dy / (sy * sy)
    v = torch.exp(-q / (2.0 * (1.0 - rho * rho))) * inside
    return torch.einsum("shw,sc->hwc", v, colors)


def load_official(official):
    gscuda = types.ModuleType("gscuda")
    wrapper = types.ModuleType("gscuda.gswrapper")
    wrapper.gaussiansplatting_render = dense_render
    sys.modules["gscuda"], sys.modules["gscuda.gswrapper"] = gscuda, wrapper
    sys.path.insert(0, official)
    from models.gpstoken import GPSToken  # noqa: E402

    return GPSToken


def train(official, config, inputs, batch, threads, reps):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = yaml.safe_load(open(config))["model"]
    gps, dec = cfg["gpsconfig"], cfg["decoderconfig"]
    s, n = cfg.get("image_size", dec["resolution"]), gps["gps_num"]
    raw = np.fromfile(inputs, dtype="<f4")
    sizes = [batch * 3 * s * s, batch * n * 5, batch * n * 4]
    assert raw.size == sum(sizes), "inputs do not match the config and batch"
    image = torch.from_numpy(raw[: sizes[0]].reshape(batch, 3, s, s).copy())
    g_init = torch.from_numpy(raw[sizes[0] : sizes[0] + sizes[1]].reshape(batch, n, 5).copy())
    regions = torch.from_numpy(raw[sizes[0] + sizes[1] :].reshape(batch, n, 4).copy())
    with open("/dev/null", "w") as devnull:  # DecoderNP prints its z shape
        stdout, sys.stdout = sys.stdout, devnull
        model = load_official(official)(gps, dec)
        sys.stdout = stdout
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.5, 0.9))

    def step():
        opt.zero_grad(set_to_none=True)
        # encode() converts the regions in place, so each step gets a fresh copy.
        recon = model(image, init_gpscodes=g_init.clone(), regions=regions.clone())
        loss = torch.mean((recon - image) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    wall, c0 = [], time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = step()
        wall.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / reps
    wall.sort()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "batch": batch, "threads": threads, "seconds": round(wall[reps // 2], 4),
                      "cpu_seconds": round(cpu, 4), "loss": loss, "torch": torch.__version__}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "train":
        o, c, i, b, t, r = sys.argv[2:8]
        train(o, c, i, int(b), int(t), int(r))
    else:
        sys.exit(f"unknown mode {mode}")
