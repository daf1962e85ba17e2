"""The official GPSToken model (PyTorch, CPU) for scripts/compare/train_step.sh.

  train_step_driver.py train OFFICIAL CONFIG.yaml INPUTS.f32 BATCH THREADS REPS
      2 warm-up steps, then REPS timed training steps (forward, MSE, backward, Adam with the
      official betas) on the batch that `train_step` wrote to INPUTS.f32; prints one JSON line
      (median wall seconds and process CPU seconds per step).
  train_step_driver.py gpu OFFICIAL CONFIG.yaml INPUTS.f32 INPUT_BATCH BATCH REPS
      The same on the GPU (scripts/gpu-check.sh): the INPUT_BATCH samples of INPUTS.f32 repeated
      to BATCH, the official CUDA renderer (gscuda, built by torch's JIT loader) when it builds,
      else the dense expression below; the JSON says which ("renderer").

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
    dev = coords.device
    xs = (torch.arange(w, dtype=torch.float64) * 2.0 / (w - 1) - 1.0).to(torch.float32).to(dev)
    ys = (torch.arange(h, dtype=torch.float64) * 2.0 / (h - 1) - 1.0).to(torch.float32).to(dev)
    sx, sy, rho = sigmas[:, 0, None, None], sigmas[:, 1, None, None], sigmas[:, 2, None, None]
    dx = xs[None, None, :] - coords[:, 0, None, None]  # [S, 1, W]
    dy = ys[None, :, None] - coords[:, 1, None, None]  # [S, H, 1]
    inside = (dx.abs() <= dmax * sx) & (dy.abs() <= dmax * sy)  # [S, H, W], no gradient
    q = dx * dx / (sx * sx) - 2.0 * rho * dx * dy / (sx * sy) + dy * dy / (sy * sy)
    v = torch.exp(-q / (2.0 * (1.0 - rho * rho))) * inside
    return torch.einsum("shw,sc->hwc", v, colors)


def load_official(official, real_renderer=False):
    """The official GPSToken class; with `real_renderer`, the official gscuda extension (built on
    import), else the dense stand-in."""
    sys.path.insert(0, official)
    if real_renderer:
        from models.gpstoken import GPSToken  # noqa: E402

        return GPSToken
    gscuda = types.ModuleType("gscuda")
    wrapper = types.ModuleType("gscuda.gswrapper")
    wrapper.gaussiansplatting_render = dense_render
    sys.modules["gscuda"], sys.modules["gscuda.gswrapper"] = gscuda, wrapper
    from models.gpstoken import GPSToken  # noqa: E402

    return GPSToken


def read_inputs(config, inputs, batch):
    """The config's gpsconfig and decoderconfig, and the batch `train_step` wrote: image
    [B, 3, S, S], g_init [B, N, 5], regions [B, N, 4]."""
    cfg = yaml.safe_load(open(config))["model"]
    gps, dec = cfg["gpsconfig"], cfg["decoderconfig"]
    s, n = cfg.get("image_size", dec["resolution"]), gps["gps_num"]
    raw = np.fromfile(inputs, dtype="<f4")
    shapes = [(batch, 3, s, s), (batch, n, 5), (batch, n, 4)]
    sizes = [int(np.prod(shape)) for shape in shapes]
    assert raw.size == sum(sizes), "inputs do not match the config and batch"
    at = np.cumsum([0] + sizes)
    tensors = [torch.from_numpy(raw[at[k] : at[k + 1]].reshape(shape).copy()) for k, shape in enumerate(shapes)]
    return gps, dec, tensors


def training_step(model, lr, image, g_init, regions):
    """One official training step (forward, MSE, backward, Adam with the official betas)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))

    def step():
        opt.zero_grad(set_to_none=True)
        # encode() converts the regions in place, so each step gets a fresh copy.
        recon = model(image, init_gpscodes=g_init.clone(), regions=regions.clone())
        loss = torch.mean((recon - image) ** 2)
        loss.backward()
        opt.step()
        return loss

    return step


def train(official, config, inputs, batch, threads, reps):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gps, dec, (image, g_init, regions) = read_inputs(config, inputs, batch)
    with open("/dev/null", "w") as devnull:  # DecoderNP prints its z shape
        stdout, sys.stdout = sys.stdout, devnull
        model = load_official(official)(gps, dec)
        sys.stdout = stdout
    step = training_step(model, 4e-4, image, g_init, regions)
    for _ in range(2):
        step()
    wall, c0 = [], time.process_time()
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = step().item()
        wall.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / reps
    wall.sort()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "batch": batch, "threads": threads, "seconds": round(wall[reps // 2], 4),
                      "cpu_seconds": round(cpu, 4), "loss": loss, "torch": torch.__version__}))


def gpu(official, config, inputs, input_batch, batch, reps):
    torch.manual_seed(0)
    gps, dec, tensors = read_inputs(config, inputs, input_batch)
    copies = -(-batch // input_batch)
    image, g_init, regions = [t.repeat(copies, *([1] * (t.dim() - 1)))[:batch].cuda() for t in tensors]
    renderer = "gscuda"
    with open("/dev/null", "w") as devnull:  # DecoderNP prints its z shape, the JIT build its log
        stdout, sys.stdout = sys.stdout, devnull
        try:
            model_class = load_official(official, real_renderer=True)
        except Exception as e:  # noqa: BLE001 (no nvcc/ninja: the stand-in)
            renderer = f"dense stand-in (gscuda did not build: {type(e).__name__})"
            for name in [m for m in sys.modules if m == "gscuda" or m.startswith(("gscuda.", "models"))]:
                del sys.modules[name]
            model_class = load_official(official)
        model = model_class(gps, dec).cuda()
        sys.stdout = stdout
    step = training_step(model, 5e-5, image, g_init, regions)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    wall = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
    wall.sort()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "batch": batch, "seconds": round(wall[reps // 2], 4), "loss": loss.item(),
                      "renderer": renderer, "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "train":
        o, c, i, b, t, r = sys.argv[2:8]
        train(o, c, i, int(b), int(t), int(r))
    elif mode == "gpu":
        o, c, i, ib, b, r = sys.argv[2:8]
        gpu(o, c, i, int(ib), int(b), int(r))
    else:
        sys.exit(f"unknown mode {mode}")
