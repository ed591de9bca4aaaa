"""minidiff against diffusers, in one run on one machine: training speed, sampling time, peak memory.

    python benchmarks/bench.py --device cpu          # 6 to 8 minutes on one core of the development machine
    python benchmarks/bench.py --device cuda         # full DDPM-1000 and DDIM-50 runs, plus the compiled paths

Both libraries get the same work: the same parameter count (within 10%), resolution, batch, precision and
number of threads, random images as data, warm-up calls excluded, the median of interleaved repeats (the two
libraries alternate, so a change in machine load hits both). diffusers is ``UNet2DModel`` with
``DDPMScheduler`` / ``DDIMScheduler``, constructed locally (no hub), driven by the loops of its
``DDPMPipeline`` / ``DDIMPipeline`` and of the Hugging Face diffusion course's training notebook.
minidiff is ``UNet`` with ``eps_loss``, ``ddpm_sample`` and ``ddim_sample``, in the memory format that
``minidiff.train`` uses on the device (channels-last on the CPU, NCHW on a GPU).

Sampling on the CPU: 1000 steps of a U-Net take long there, so each sampler runs its real loop for a few steps
and the time of 64 images is reported as the measured time per step times the number of steps. On CUDA the
samplers run in full.

Writes ``benchmarks/results/<device>-<date>.json`` (``<device>-bf16-<date>.json`` with ``--bf16``: machine,
versions, configurations, raw times, ratios) and prints a table. On a GPU both sizes with their compiled paths
take over ten minutes; ``--sizes`` with ``--add-to`` splits the work over runs on the same setup. The book's
Performance page is generated from these files (``benchmarks/report.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import minidiff as md
from minidiff import fast
from minidiff.fast import CompiledModel
from minidiff.runtime import cpu_model
from minidiff.train import TrainConfig, make_optimizer

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_IMAGES = 64
T = 1000
DDIM_STEPS = 50

# The two sizes. diffusers' 28-px model is the Hugging Face diffusion course's Fashion-MNIST configuration; the
# minidiff configuration with the same architecture has exactly its parameter count. The 32-px model is DDPM's
# CIFAR-10 network (Ho et al. 2020, appendix B) in both libraries, with dropout 0.1 as in the paper.
SIZES = {
    "fmnist-28px": dict(
        shape=(1, 28, 28),
        diffusers=dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        minidiff=dict(in_channels=1, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                      attention_levels=(False, True, True), scale_shift=False),
        # batch, timed steps per training repeat, repeats; sampler steps timed per repeat (CPU), repeats
        cpu=dict(train_batch=64, train_steps=1, train_repeats=7, sample_steps=2, sample_repeats=5),
        cuda=dict(train_batch=128, train_steps=20, train_repeats=5, sample_repeats=3),
    ),
    "ddpm-cifar10-32px": dict(
        shape=(3, 32, 32),
        diffusers=dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1),
        minidiff=md.unet.PRESETS["ddpm-cifar10"],
        cpu=dict(train_batch=8, train_steps=1, train_repeats=9, sample_steps=1, sample_repeats=5),
        cuda=dict(train_batch=128, train_steps=10, train_repeats=5, sample_repeats=3),
    ),
}

# The U-Net code paths this version of the benchmark measures (the Performance page notes results without them).
UNET_PATHS = ["attention projections as matrix products over the channels", "SiLU out of place under autograd",
              "dropout masks from uniform draws on the CPU",
              "upsampling convolution as a stride-2 transposed convolution on the CPU",
              "channels-last kernels handed to the fused AdamW as contiguous views"]

# The project's speed targets, minidiff against diffusers, by device (each result records its device's).
TARGETS = json.loads((Path(__file__).resolve().parent / "targets.json").read_text())


# ------------------------------------------------------------------------------------------ models and steps
def build(size: str, lib: str, device: torch.device, *, channels_last: bool | None = None, plain: bool = False,
          **overrides):
    """The model of ``lib`` for ``size``, seeded, on ``device``. minidiff's is what ``minidiff.train`` trains:
    :func:`minidiff.fast.apply` of the U-Net (fast blocks; channels-last on the CPU, NCHW on a GPU), in the other
    memory format if told; ``plain`` gives the book's U-Net without ``minidiff.fast``, NCHW."""
    torch.manual_seed(0)
    spec = SIZES[size]
    if lib == "diffusers":
        from diffusers import UNet2DModel
        return UNet2DModel(**{**spec["diffusers"], **overrides}).to(device)
    model = md.UNet(**{**spec["minidiff"], **overrides}).to(device)
    if plain:
        return model
    fast.apply(model)
    if channels_last is None:
        return model
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def is_channels_last(model) -> bool:
    """Whether ``model``'s convolution kernels are stored channels-last (its inputs then follow)."""
    return any(fast.is_channels_last(p) for p in model.parameters())


def images(size: str, batch: int, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """Random images in [-1, 1]: data loading is not what is measured."""
    x = torch.rand(batch, *SIZES[size]["shape"], generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast when ``bf16`` (CUDA), else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train_step(lib: str, model, size: str, batch: int, device: torch.device, bf16: bool = False):
    """One closure = one optimizer step of DDPM's Algorithm 1, as each library's own training loop does it.

    minidiff's images take the memory format of its weights (see :func:`build`)."""
    model.train()
    gen = torch.Generator(device).manual_seed(2)
    if lib == "diffusers":
        from diffusers import DDPMScheduler
        sched = DDPMScheduler(num_train_timesteps=T)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = images(size, batch, device)

        def step():   # the Hugging Face diffusion course's training loop
            noise = torch.randn(x0.shape, generator=gen, device=device)
            t = torch.randint(0, T, (batch,), generator=gen, device=device)
            with autocast(device, bf16):
                pred = model(sched.add_noise(x0, noise, t), t, return_dict=False)[0]
                loss = F.mse_loss(pred.float(), noise)
            loss.backward()
            opt.step()
            opt.zero_grad()
    else:
        sched = fast.schedule_on(md.NoiseSchedule.linear(T=T), device)   # as minidiff.train: no copy per step
        opt = make_optimizer(model, TrainConfig(lr=1e-4), device)   # minidiff.fast's AdamW (fused on CUDA and CPU)
        x0 = images(size, batch, device, channels_last=is_channels_last(model))

        def step():   # minidiff.train's step without gradient clipping and EMA (the course loop has neither)
            with autocast(device, bf16):
                loss = md.eps_loss(model, x0, sched, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return step


class _Stop(Exception):
    pass


def sample_run(lib: str, model, size: str, sampler: str, steps_timed: int | None, device: torch.device,
               bf16: bool = False):
    """One closure = ``steps_timed`` steps (all of them if None) of 64 images with DDPM-1000 or DDIM-50, under
    bfloat16 autocast if ``bf16`` (the network in bf16, the sampler's update in float32 in both libraries).

    ``model`` must already be in eval mode."""
    shape = (SAMPLE_IMAGES, *SIZES[size]["shape"])
    total = T if sampler == "ddpm" else DDIM_STEPS
    n = total if steps_timed is None else steps_timed
    gen = torch.Generator(device)
    if lib == "diffusers":
        from diffusers import DDIMScheduler, DDPMScheduler
        sched = DDPMScheduler(num_train_timesteps=T, clip_sample=False) if sampler == "ddpm" else \
            DDIMScheduler(num_train_timesteps=T, clip_sample=False)

        @torch.no_grad()
        def run():   # DDPMPipeline.__call__ / DDIMPipeline.__call__ without the conversion to PIL images
            gen.manual_seed(3)
            x = torch.randn(shape, generator=gen, device=device)
            sched.set_timesteps(total)
            for t in sched.timesteps[:n]:
                with autocast(device, bf16):
                    eps = model(x, t).sample
                kw = dict(eta=0.0) if sampler == "ddim" else {}
                x = sched.step(eps, t, x, generator=gen, **kw).prev_sample
            return x
    else:
        sched = md.NoiseSchedule.linear(T=T)

        def stop_after_n(i, t, x, x0_hat):
            if i + 1 == n and n < total:
                raise _Stop

        def run():
            gen.manual_seed(3)
            try:
                with autocast(device, bf16):
                    if sampler == "ddpm":
                        return md.ddpm_sample(model, shape, sched, generator=gen, device=device,
                                              callback=stop_after_n)
                    return md.ddim_sample(model, shape, sched, steps=total, generator=gen, device=device,
                                          callback=stop_after_n)
            except _Stop:
                return None
    return run


# ------------------------------------------------------------------------------------------ timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, *, repeats: int, warmup: int, device: torch.device) -> dict:
    """Wall and process-CPU seconds of each closure, ``repeats`` times, alternating the order every repeat."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: {"wall_s": [], "cpu_s": []} for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            sync(device)
            out[name]["wall_s"].append(time.perf_counter() - wall)
            out[name]["cpu_s"].append(time.process_time() - cpu)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def forward_flops(model, size: str, device: torch.device) -> int:
    """Floating-point operations of one image's forward pass (convolutions, matrix products, attention),
    counted by PyTorch's FlopCounterMode; a training step costs about three times this per image."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    x = images(size, 1, device)
    # The unfused attention kernel is made of matrix products, which the counter sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model.eval()(x, torch.zeros(1, dtype=torch.long, device=device))
    return counter.get_total_flops()


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate (FLOP/s) with the benchmark's threads: a practical ceiling."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cuda_peak(fn, device: torch.device) -> int:
    """Peak bytes allocated on the GPU while ``fn`` runs (weights, gradients and optimizer state included)."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device)


def cpu_peak_rss_delta(size: str, lib: str, batch: int, threads: int) -> int | None:
    """Growth of the peak resident memory over two training steps, measured in a fresh process per library."""
    cmd = [sys.executable, __file__, "--memory-probe", size, lib, str(batch), "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        return int(json.loads(out.strip().splitlines()[-1])["peak_rss_delta_bytes"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux VmHWM; unlike ru_maxrss it is not inherited from
    the parent process)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def memory_probe(size: str, lib: str, batch: int) -> None:
    device = torch.device("cpu")
    step = train_step(lib, build(size, lib, device), size, batch, device)
    before = peak_rss()
    step()
    step()
    print(json.dumps({"peak_rss_delta_bytes": peak_rss() - before}))


# ------------------------------------------------------------------------------------------ one size
def bench_size(size: str, device: torch.device, args) -> dict:
    spec = SIZES[size]
    plan = dict(spec[device.type])
    # Each size compiles afresh, as in a program that uses one model: otherwise the second size's U-Net would hit
    # the first's compiled code, fail its shape guards and be recompiled for dynamic shapes (slower to build).
    torch._dynamo.reset()
    if args.repeats is not None:
        plan.update(train_repeats=args.repeats, sample_repeats=args.repeats)
    models = {lib: build(size, lib, device) for lib in ("diffusers", "minidiff")}
    params = {lib: md.n_params(m) for lib, m in models.items()}
    if abs(params["minidiff"] / params["diffusers"] - 1) > 0.10:
        raise RuntimeError(f"{size}: parameter counts differ by more than 10%: {params}")
    result = {"params": params, "flops_per_image_forward": {lib: forward_flops(m, size, device)
                                                            for lib, m in models.items()},
              "plan": plan, "configs": {
        "diffusers": {k: list(v) if isinstance(v, tuple) else v for k, v in spec["diffusers"].items()},
        "minidiff": models["minidiff"].config}}
    B = plan["train_batch"]
    print(f"\n{size}: {params['diffusers']:,} vs {params['minidiff']:,} parameters; training batch {B}", flush=True)

    # Training images per second. On CUDA also minidiff in channels-last, the layout it uses on the CPU.
    steps = {lib: train_step(lib, m, size, B, device, args.bf16) for lib, m in models.items()}
    if device.type == "cuda":
        steps["minidiff-channels-last"] = train_step(
            "minidiff", build(size, "minidiff", device, channels_last=True), size, B, device, args.bf16)
    if args.compile and args.compile_train:
        steps["minidiff-compiled"] = train_step("minidiff", torch.compile(models["minidiff"]), size, B, device,
                                                args.bf16)
    per_repeat = plan["train_steps"]
    fns = {name: (lambda s=s: [s() for _ in range(per_repeat)]) for name, s in steps.items()}
    clock = time.perf_counter()
    for fn in fns.values():
        fn()                                                            # includes any compilation
    result["train_first_call_s"] = time.perf_counter() - clock
    raw = interleaved(fns, repeats=plan["train_repeats"], warmup=1, device=device)
    result["train"] = {name: {**r, "images_per_s": B * per_repeat / median(r["wall_s"]),
                              "images_per_s_cpu_time": B * per_repeat / median(r["cpu_s"])}
                       for name, r in raw.items()}
    if device.type == "cuda":
        result["train_peak_memory_bytes"] = {name: cuda_peak(step, device) for name, step in steps.items()}
    elif not args.no_memory:
        result["train_peak_rss_delta_bytes"] = {lib: cpu_peak_rss_delta(size, lib, B, args.threads)
                                                for lib in models}
    print("  training: " + ", ".join(f"{k} {v['images_per_s']:.1f} img/s" for k, v in result["train"].items()),
          flush=True)

    # Sampling 64 images: DDPM-1000 and DDIM-50.
    timed = None if device.type == "cuda" else plan["sample_steps"]
    for m in models.values():
        m.eval()
    samplers = {}
    if args.compile:
        samplers["minidiff-compiled"] = CompiledModel(models["minidiff"])
    for sampler, total in (("ddpm", T), ("ddim", DDIM_STEPS)):
        def runs(steps_timed):
            return {**{lib: sample_run(lib, m, size, sampler, steps_timed, device, args.bf16)
                       for lib, m in models.items()},
                    **{name: sample_run("minidiff", m, size, sampler, steps_timed, device, args.bf16)
                       for name, m in samplers.items()}}

        fns = runs(timed)
        if timed is None:
            # Full runs: warm up (cuDNN's algorithm search, compilation, CUDA graph capture) on a few steps of
            # each loop instead of a whole 1000-step run per library.
            warm = runs(3)
            for _ in range(2):
                for fn in warm.values():
                    fn()
        raw = interleaved(fns, repeats=plan["sample_repeats"], warmup=0 if timed is None else 1, device=device)
        n = total if timed is None else timed
        result[sampler] = {name: {**r, "steps_timed": n, "steps": total,
                                  "seconds": median(r["wall_s"]) / n * total,
                                  "seconds_cpu_time": median(r["cpu_s"]) / n * total}
                           for name, r in raw.items()}
        print(f"  {sampler}-{total}, {SAMPLE_IMAGES} images: "
              + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in result[sampler].items()), flush=True)
    if device.type == "cuda":
        result["sample_peak_memory_bytes"] = {
            lib: cuda_peak(sample_run(lib, m, size, "ddim", None, device, args.bf16), device)
            for lib, m in models.items()}

    result["ratios"] = ratios(result)
    return result


def path_suffix(name: str) -> str:
    """The ratio-key suffix of a minidiff path: "" for "minidiff", "_channels_last" for "minidiff-channels-last"."""
    return "" if name == "minidiff" else "_" + name.split("-", 1)[1].replace("-", "_")


def ratios(r: dict) -> dict:
    """minidiff / diffusers speed-ups (> 1 is minidiff faster) and the memory ratio (< 1 is minidiff smaller)."""
    out = {}
    for name in [k for k in r["train"] if k != "diffusers"]:
        suffix = path_suffix(name)
        out["train_images_per_s" + suffix] = r["train"][name]["images_per_s"] / r["train"]["diffusers"]["images_per_s"]
        out["train_images_per_s_cpu_time" + suffix] = (r["train"][name]["images_per_s_cpu_time"]
                                                       / r["train"]["diffusers"]["images_per_s_cpu_time"])
    for sampler, key in (("ddpm", "ddpm_1000_seconds"), ("ddim", "ddim_50_seconds")):
        for name in [k for k in r[sampler] if k != "diffusers"]:
            suffix = path_suffix(name)
            out[key + suffix] = r[sampler]["diffusers"]["seconds"] / r[sampler][name]["seconds"]
            out[key + "_cpu_time" + suffix] = (r[sampler]["diffusers"]["seconds_cpu_time"]
                                               / r[sampler][name]["seconds_cpu_time"])
    for key in ("train_peak_memory_bytes", "train_peak_rss_delta_bytes", "sample_peak_memory_bytes"):
        mem = r.get(key) or {}
        for name in [k for k in mem if k != "diffusers"]:
            suffix = path_suffix(name)
            if mem["diffusers"] and mem[name] is not None:
                out[key.replace("_bytes", "") + "_minidiff_over_diffusers" + suffix] = mem[name] / mem["diffusers"]
    return out


# ------------------------------------------------------------------------------------------ what each change buys
def ablation(device: torch.device, args) -> dict:
    """The 28-px model in the layouts and code paths that the optimisations changed, one at a time."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    size, B = "fmnist-28px", SAMPLE_IMAGES
    repeats = args.repeats or 3
    math_attention = lambda: sdpa_kernel(SDPBackend.MATH)                 # noqa: E731

    def forward_and_train(model, size: str, B: int, channels_last: bool, context=None):
        x = images(size, B, device, channels_last=channels_last)
        t = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(4)).to(device)
        out_of = (lambda o: o) if isinstance(model, md.UNet) else (lambda o: o.sample)
        context = context or contextlib.nullcontext

        def forward():
            with torch.no_grad(), context():
                out_of(model.eval()(x, t))

        def train():
            with context():
                out_of(model.train()(x, t)).square().mean().backward()
            model.zero_grad(set_to_none=True)
        return forward, train

    variants = {
        "minidiff plain (without minidiff.fast), NCHW": (build(size, "minidiff", device, plain=True), False, None),
        "minidiff NCHW, unfused (math) attention": (build(size, "minidiff", device, channels_last=False), False,
                                                    math_attention),
        "minidiff NCHW, fused attention": (build(size, "minidiff", device, channels_last=False), False, None),
        "minidiff channels-last, fused attention": (build(size, "minidiff", device, channels_last=True), True,
                                                    None),
        "minidiff channels-last, num_groups=32": (build(size, "minidiff", device, channels_last=True,
                                                        num_groups=32), True, None),
        "diffusers": (build(size, "diffusers", device), False, None),
        "diffusers channels-last": (build(size, "diffusers", device).to(memory_format=torch.channels_last),
                                    True, None),
    }
    pairs = {name: forward_and_train(m, size, B, cl, ctx) for name, (m, cl, ctx) in variants.items()}
    print(f"\nablation ({size}, batch {B}, forward pass and forward+backward)", flush=True)
    fwd = interleaved({k: f for k, (f, _) in pairs.items()}, repeats=repeats, warmup=1, device=device)
    trn = interleaved({k: g for k, (_, g) in pairs.items()}, repeats=repeats, warmup=1, device=device)
    out = {"size": size, "batch": B, "repeats": repeats, "forward": fwd, "forward_backward": trn}
    for name in pairs:
        print(f"  {name:<42} forward {median(fwd[name]['wall_s']) * 1e3:7.0f} ms   "
              f"forward+backward {median(trn[name]['wall_s']) * 1e3:7.0f} ms", flush=True)

    # Classifier-free guidance: one call of 2B rows against two calls of B rows.
    model = build(size, "minidiff", device, num_classes=10).eval()
    x = images(size, B, device, channels_last=is_channels_last(model))
    t = torch.full((B,), 500, device=device)
    y = torch.arange(B, device=device) % 10
    hidden = lambda x_t, t, y=None: model(x_t, t, y)                     # no num_classes: two calls  # noqa: E731
    with torch.no_grad():
        cfg = interleaved({"one call of 2B rows": lambda: md.guidance.guided_eps(model, x, t, y, 3.0),
                           "two calls of B rows": lambda: md.guidance.guided_eps(hidden, x, t, y, 3.0)},
                          repeats=repeats, warmup=1, device=device)
    out["guidance_step"] = cfg
    print("  guided prediction (scale 3): " + ", ".join(f"{k} {median(v['wall_s']) * 1e3:.0f} ms"
                                                        for k, v in cfg.items()), flush=True)

    # The 35.7M model with the attention of google/ddpm-cifar10-32 (one head) instead of diffusers' default
    # (heads of 8 channels): the same parameters and FLOPs, another attention kernel shape.
    size, B = "ddpm-cifar10-32px", 16
    heads = {"diffusers, heads of 8 channels (default)": build(size, "diffusers", device),
             "diffusers, one head (google/ddpm-cifar10-32)": build(size, "diffusers", device, attention_head_dim=None),
             "minidiff, heads of 32 channels": build(size, "minidiff", device)}
    fns = {name: forward_and_train(m, size, B, is_channels_last(m))[0] for name, m in heads.items()}
    out["cifar_attention_heads_forward"] = {"batch": B, **interleaved(fns, repeats=max(repeats - 1, 2), warmup=1,
                                                                       device=device)}
    print(f"  {size} forward, batch {B}: " + ", ".join(
        f"{k} {median(out['cifar_attention_heads_forward'][k]['wall_s']) * 1e3:.0f} ms" for k in heads), flush=True)

    # The upsampling convolution as a transposed convolution (taken on the CPU only), on the 35.7M model: its
    # upsamplings run at 256 channels and up to 32 px, where the saved arithmetic shows. Forward at batch 16,
    # training at batch 8. The difference is a few percent of the whole model, so both get more repeats than the
    # other ablations.
    if device.type == "cpu":
        plain = build(size, "minidiff", device)
        for module in plain.modules():
            if isinstance(module, fast.FastUpsample):
                module.TRANSPOSED_MIN_PIXELS = float("inf")              # always nearest x2, then the 3x3 conv
        models = {"upsample, then 3x3 conv": plain, "transposed convolution": build(size, "minidiff", device)}
        fns = {name: forward_and_train(m, size, 16, is_channels_last(m))[0] for name, m in models.items()}
        up = {"min_pixels": fast.FastUpsample.TRANSPOSED_MIN_PIXELS, "min_side": fast.FastUpsample.TRANSPOSED_MIN_SIDE,
              "forward": {"batch": 16, **interleaved(fns, repeats=2 * repeats + 1, warmup=1, device=device)}}
        fns = {name: forward_and_train(m, size, 8, is_channels_last(m))[1] for name, m in models.items()}
        up["forward_backward"] = {"batch": 8, **interleaved(fns, repeats=3 * repeats, warmup=1, device=device)}
        out["cifar_upsample_transposed"] = up
        print(f"  {size} upsampling: " + "; ".join(
            f"{what} (batch {up[what]['batch']}): "
            + ", ".join(f"{k} {median(up[what][k]['wall_s']) * 1e3:.0f} ms" for k in models)
            for what in ("forward", "forward_backward")), flush=True)
        out["optimizer_step"] = optimizer_step(size, device, repeats)
    return out


def optimizer_step(size: str, device: torch.device, repeats: int) -> dict:
    """One optimizer step on the parameters of ``size`` (channels-last): torch's fused AdamW, which copies each
    channels-last kernel before its update, against minidiff's, which hands the kernel contiguous views."""
    model = build(size, "minidiff", device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)                                      # in the parameter's layout
    opts = {"torch.optim.AdamW": torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True),
            "minidiff.fast.AdamW": fast.AdamW(model.parameters(), lr=1e-4, fused=True)}
    out = interleaved({k: opt.step for k, opt in opts.items()}, repeats=3 * repeats, warmup=1, device=device)
    print(f"  {size} optimizer step: " + ", ".join(f"{k} {median(v['wall_s']) * 1e3:.1f} ms" for k, v in out.items()),
          flush=True)
    return out


def thread_probe(device: torch.device, threads: list[int], repeats: int = 3) -> dict:
    """One forward pass of the 28-px minidiff model at batch 64 with each number of threads, interleaved."""
    size, B = "fmnist-28px", SAMPLE_IMAGES
    model = build(size, "minidiff", device).eval()
    x = images(size, B, device, channels_last=True)
    t = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(4))
    before = torch.get_num_threads()
    out = {"batch": B, "load_average": list(os.getloadavg()), "wall_s": {str(n): [] for n in threads}}
    with torch.no_grad():
        for r in range(repeats + 1):
            for n in threads:
                torch.set_num_threads(n)
                start = time.perf_counter()
                model(x, t)
                if r:                                                     # the first round is the warm-up
                    out["wall_s"][str(n)].append(time.perf_counter() - start)
    torch.set_num_threads(before)
    print("\nthreads, 28-px forward at batch 64: " + ", ".join(
        f"{n}: {median(v) * 1e3:.0f} ms" for n, v in out["wall_s"].items()), flush=True)
    return out


# ------------------------------------------------------------------------------------------ report
def machine(device: torch.device, threads: int) -> dict:
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "threads_requested": threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "nice": os.nice(0),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "platform": platform.platform(), "load_average_at_start": list(os.getloadavg())}


def versions() -> dict:
    import diffusers
    import numpy
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "minidiff": md.__version__, "numpy": numpy.__version__,
            "cuda": torch.version.cuda, "mkldnn": torch.backends.mkldnn.is_available()}


def table_rows(r: dict) -> list[tuple[str, float, float, str | None, str]]:
    """(metric, diffusers, minidiff, ratio key, number format) for one size."""
    rows = [("training img/s", r["train"]["diffusers"]["images_per_s"], r["train"]["minidiff"]["images_per_s"],
             "train_images_per_s", "{:.1f}")]
    for sampler, key in (("ddpm", "ddpm_1000_seconds"), ("ddim", "ddim_50_seconds")):
        s = r[sampler]["minidiff"]
        how = "s" if s["steps_timed"] == s["steps"] else f"s, step x {s['steps']}"
        rows.append((f"{sampler.upper()}-{s['steps']}, 64 images ({how})", r[sampler]["diffusers"]["seconds"],
                     s["seconds"], key, "{:.1f}"))
    for key, label in (("train_peak_memory_bytes", "train peak GPU memory (MiB)"),
                       ("train_peak_rss_delta_bytes", "train peak RSS growth (MiB)")):
        mem = r.get(key)
        if mem and None not in mem.values():
            rows.append((label, mem["diffusers"] / 2**20, mem["minidiff"] / 2**20,
                         key.replace("_bytes", "_minidiff_over_diffusers"), "{:.0f}"))
    return rows


def targets_met(res: dict) -> dict:
    """Each target of the device against the ratio it is about (memory: minidiff / diffusers <= target)."""
    met = {}
    for size, r in res["sizes"].items():
        for key, target in res["targets"].items():
            if key == "train_peak_memory":
                ratio = r["ratios"].get("train_peak_memory_minidiff_over_diffusers")
                met[f"{size}:{key}"] = None if ratio is None else ratio <= target
            else:
                ratio = r["ratios"].get(key)
                met[f"{size}:{key}"] = None if ratio is None else ratio >= target
    return met


def add_to(earlier: dict, res: dict, sizes: list[str]) -> dict:
    """``res`` (not yet measured) set up to extend ``earlier``: its sizes other than ``sizes`` are kept, each with
    the run that measured it. Ratios are only ever formed within one run, so a result may hold several."""
    same = {"device": (earlier["device"], res["device"]),
            "GPU": (earlier["machine"]["gpu"], res["machine"]["gpu"]),
            "precision": (earlier["method"]["precision"], res["method"]["precision"]),
            "torch": (earlier["versions"]["torch"], res["versions"]["torch"]),
            "diffusers": (earlier["versions"]["diffusers"], res["versions"]["diffusers"])}
    for what, (was, now) in same.items():
        if was != now:
            raise ValueError(f"--add-to: the earlier result's {what} is {was!r}, this run's is {now!r}; "
                             "results can only be added to a run of the same setup")
    runs = earlier.get("runs") or [{"command": earlier["command"], "date": earlier["date"],
                                    "sizes": list(earlier["sizes"])}]
    kept = {k: v for k, v in earlier["sizes"].items() if k not in sizes}
    runs = [{**r, "sizes": [k for k in r["sizes"] if k in kept]} for r in runs]
    extras = {k: earlier[k] for k in ("ablation",) if k in earlier}     # replaced if this run measures it again
    return {**res, **extras, "sizes": kept, "runs": [r for r in runs if r["sizes"]] + [
        {"command": res["command"], "date": res["date"], "sizes": sizes}]}


def print_table(res: dict) -> None:
    m = res["machine"]
    print(f"\n{m['gpu'] or m['cpu_model']}, {m['torch_threads']} thread(s), torch {res['versions']['torch']}, "
          f"diffusers {res['versions']['diffusers']}")
    head = f"{'size':<19}{'metric':<36}{'diffusers':>10}{'minidiff':>10}{'ratio':>8}{'target':>8}"
    print(head + "\n" + "-" * len(head))
    for size, r in res["sizes"].items():
        for metric, d, mini, key, fmt in table_rows(r):
            ratio = r["ratios"].get(key)
            target = res["targets"].get(key.replace("_minidiff_over_diffusers", ""))
            print(f"{size:<19}{metric:<36}{fmt.format(d):>10}{fmt.format(mini):>10}"
                  f"{'' if ratio is None else f'{ratio:.2f}x':>8}{'' if target is None else f'{target}x':>8}")
    print("ratio: minidiff's speed-up over diffusers (memory rows: minidiff / diffusers)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for both libraries (default 1: fair on a shared machine)")
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated subset of {', '.join(SIZES)}")
    p.add_argument("--repeats", type=int, help="override the repeats of every measurement")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time minidiff's opt-in compiled paths (default: on for CUDA, off for the CPU)")
    p.add_argument("--compile-train", action=argparse.BooleanOptionalAction, default=True,
                   help="with --compile, also time a compiled training step (compiling it takes a minute or two)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast in training and sampling, both libraries (CUDA); "
                        "writes <device>-bf16-<date>.json")
    p.add_argument("--no-ablation", action="store_true", help="skip the one-change-at-a-time measurements")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory probes (two processes per size)")
    p.add_argument("--thread-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: time one forward pass with 1 thread and with all logical CPUs (a few seconds)")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/<device>-<date>.json)")
    p.add_argument("--add-to", type=Path, metavar="JSON",
                   help="add the sizes measured now to an earlier result of the same device, GPU, precision and "
                        "versions (a GPU lease too short for every size in one run); written back to that file")
    p.add_argument("--memory-probe", nargs=3, metavar=("SIZE", "LIB", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        size, lib, batch = args.memory_probe
        memory_probe(size, lib, int(batch))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.compile is None:
        args.compile = device.type == "cuda"
    if args.bf16 and device.type != "cuda":
        p.error("--bf16 is for CUDA; the CPU comparison runs in float32")
    sizes = args.sizes.split(",")
    if not set(sizes) <= set(SIZES):
        p.error(f"--sizes must be a subset of {', '.join(SIZES)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    start = time.perf_counter()
    argv_shown = [Path(a).name if prev == "--out" else a for prev, a in zip(["", *sys.argv[1:]], sys.argv[1:])]
    res = {"benchmark": "minidiff vs diffusers", "command": " ".join([Path(sys.argv[0]).name, *argv_shown]),
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device.type,
           "machine": machine(device, args.threads), "versions": versions(),
           "method": {
               "precision": "bfloat16 autocast (training and sampling)" if args.bf16 else "float32",
               "timing": "median of interleaved repeats, wall clock (process CPU time recorded too); "
                         "one warm-up call per closure excluded",
               "sampling": ("full runs" if device.type == "cuda" else
                            "per-step time x steps: each sampler's real loop timed for a few steps"),
               "training": "one AdamW step on random images; diffusers: the course loop (add_noise, MSE); "
                           "minidiff: eps_loss and minidiff.train.make_optimizer; no gradient clipping or EMA",
               "minidiff_memory_format": ("channels_last, as minidiff.train on the CPU" if device.type == "cpu"
                                          else "contiguous (NCHW), as minidiff.train on a GPU (the "
                                               "minidiff-channels-last closure: channels-last)"),
               "diffusers_memory_format": "contiguous (default)",
               "minidiff_unet_paths": UNET_PATHS,
               "sample_images": SAMPLE_IMAGES, "T": T, "ddim_steps": DDIM_STEPS,
               "cuda_settings": None if device.type != "cuda" else {
                   "cudnn_benchmark": torch.backends.cudnn.benchmark,
                   "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                   "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
               "schedulers": "linear betas 1e-4..0.02; no clipping; DDPM variance beta_tilde; DDIM eta = 0"},
           "targets": TARGETS[device.type], "sizes": {}}
    res["machine"]["fp32_matmul_flops_per_s"] = matmul_peak(device)
    out = args.out or RESULTS / f"{device.type}{'-bf16' if args.bf16 else ''}-{datetime.date.today().isoformat()}.json"
    if args.add_to:
        res = add_to(json.loads(args.add_to.read_text()), res, sizes)
        out = args.out or args.add_to
    out.parent.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        res["sizes"][size] = bench_size(size, device, args)
        out.write_text(json.dumps({**res, "partial": True}, indent=1) + "\n")     # kept if a later part fails
    if not args.no_ablation:
        res["ablation"] = ablation(device, args)
    if device.type == "cpu" and args.thread_probe:
        res["thread_probe"] = thread_probe(device, sorted({1, args.threads, os.cpu_count() or 1}))
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    res["seconds_total"] = time.perf_counter() - start
    res["targets_met"] = targets_met(res)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print_table(res)
    print(f"\nwrote {out} ({res['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
