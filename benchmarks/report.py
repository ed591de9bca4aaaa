"""Write the book's Performance page (``book/performance.md``) from the committed benchmark results.

    python benchmarks/report.py            # after python benchmarks/bench.py --device cpu|cuda

Uses the newest ``benchmarks/results/<device>-<date>.json`` of each device (float32) and the newest
``cuda-bf16-<date>.json`` (bfloat16 autocast). Every number on the page comes from those files; the page names the
machine each was measured on.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "book" / "performance.md"

LABELS = {"fmnist-28px": "28 px, Fashion-MNIST model", "ddpm-cifar10-32px": "32 px, DDPM CIFAR-10 model"}
TARGET_LABELS = {"train_images_per_s": "training images/s", "ddpm_1000_seconds": "DDPM-1000, 64 images",
                 "ddim_50_seconds": "DDIM-50, 64 images", "train_peak_memory": "peak training memory"}

# The reference speed of diffusers on a GPU, from the project's anchors (measured for this project; diffusers only,
# so no ratio can be formed with it).
GPU_ANCHOR = """\
For scale, diffusers 0.42.1 alone was measured for this project on one NVIDIA H200 (torch 2.11, CUDA 13):
the 28-px model trains at 2,535 images/s (batch 128, float32) and draws 64 images in 13.6 s with DDPM-1000
(13.6 ms per step: launch-bound) and in 0.57 s with DDIM-50; the 35.7M model trains at 1,525 images/s and
samples in 19.2 s and 0.88 s. Those numbers come from a different run than minidiff's, so no ratio is formed
from them."""

BF16_PEAK = 989e12   # dense bf16 tensor-core FLOP/s of one H100 SXM or H200 (the anchors' figure)

CEILING = """\
One H100 or H200 does about 989 TFLOP/s of dense bf16 arithmetic, and small convolutional networks reach 25-50%
of that; for a ~15M-parameter 28-px U-Net that is on the order of 30,000 training images/s, a Fashion-MNIST epoch
in about 2 s."""


def load(device: str, results: Path = RESULTS, *, bf16: bool = False) -> dict | None:
    """The newest result of ``device`` in float32 (``<device>-<date>.json``) or bf16 (``<device>-bf16-<date>``)."""
    pattern = re.compile(rf"{device}-{'bf16-' if bf16 else ''}\d{{4}}-\d{{2}}-\d{{2}}\.json")
    files = sorted(f for f in results.glob(f"{device}-*.json") if pattern.fullmatch(f.name))
    return json.loads(files[-1].read_text()) if files else None


def sizes(res: dict) -> list[tuple[str, dict]]:
    """The measured sizes, smallest model first."""
    order = list(LABELS)
    return sorted(res["sizes"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def unfinished(res: dict) -> list[str]:
    """Sizes the run was asked for but did not finish (a run stopped early keeps the sizes it had done)."""
    asked = re.search(r"--sizes[ =](\S+)", res.get("command", ""))
    wanted = asked.group(1).split(",") if asked else list(LABELS)
    return [s for s in wanted if s not in res["sizes"]] if res.get("partial") else []


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def machine_line(res: dict) -> str:
    m, v = res["machine"], res["versions"]
    where = m["gpu"] or m["cpu_model"]
    threads = f"{m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''}"
    load = ""
    start = (m.get("load_average_at_start") or [0.0])[0]
    if start >= max(0.5, 0.25 * m["logical_cpus"]):
        load = (f" The machine was shared (load average {m['load_average_at_start'][0]:.1f} at the start and "
                f"{m.get('load_average_at_end', [float('nan')])[0]:.1f} at the end, on {m['logical_cpus']} "
                "logical CPUs), which slows both libraries alike: they run interleaved.")
    took = (f"{res['seconds_total'] / 60:.1f} minutes in all" if "seconds_total" in res else
            "stopped by its time limit before the last size finished")
    when = f"measured {res['date'][:10]}, {took}"
    if len(res.get("runs", [])) > 1:   # sizes measured in separate runs (same GPU model, precision, versions)
        when = (f"measured in {len(res['runs'])} runs, each size's ratios within one run: "
                + "; ".join(f"{', '.join(LABELS.get(s, s) for s in r['sizes'])} on {r['date'][:10]}"
                            for r in res["runs"]) + (f" ({took} for the last)" if "seconds_total" in res else ""))
    return (f"**Machine:** {where} ({m['logical_cpus']} logical CPUs), {threads} for both libraries; "
            f"Python {v['python']}, torch {v['torch']}, diffusers {v['diffusers']}, minidiff {v['minidiff']}; "
            f"{res['method']['precision']}; {when}.{load}")


def models_table(res: dict) -> list[str]:
    rows = ["| model | diffusers configuration | minidiff configuration | parameters (diffusers / minidiff) | "
            "forward GFLOP per image |", "|---|---|---|---|---|"]
    for size, r in sizes(res):
        d, m = r["configs"]["diffusers"], r["configs"]["minidiff"]
        n_attn = sum("Attn" in b for b in d["down_block_types"])
        dtxt = (f"`UNet2DModel`, channels {tuple(d['block_out_channels'])}, {d['layers_per_block']} layers per "
                f"block, attention in {n_attn} down block{'s' if n_attn != 1 else ''}, "
                f"dropout {d.get('dropout', 0.0)}")
        mtxt = (f"`UNet`, base {m['base_channels']}, mults {tuple(m['channel_mults'])}, {m['num_res_blocks']} res "
                f"blocks, attention levels {tuple(int(a) for a in m['attention_levels'])}, "
                f"{m['num_groups']} groups, dropout {m['dropout']}")
        p, f = r["params"], r["flops_per_image_forward"]
        rows.append(f"| {LABELS.get(size, size)} | {dtxt} | {mtxt} | {p['diffusers']:,} / {p['minidiff']:,} | "
                    f"{f['diffusers'] / 1e9:.2f} / {f['minidiff'] / 1e9:.2f} |")
    return rows


SAMPLER_KEYS = (("ddpm", "ddpm_1000_seconds"), ("ddim", "ddim_50_seconds"))
# minidiff's paths in a result: (suffix of its ratio keys, its name in the raw results, how the page names it).
# The default is eager, in minidiff.train's layout for the device; on CUDA the benchmark also times the other
# layout and a compiled model. (Runs before the GPU default became NCHW timed channels-last plus "minidiff-nchw".)
PATHS = (("", "minidiff", "eager"), ("_nchw", "minidiff-nchw", "eager, NCHW"),
         ("_channels_last", "minidiff-channels-last", "eager, channels-last"),
         ("_compiled", "minidiff-compiled", "compiled"))


def layouts(train: dict) -> tuple[float, float] | None:
    """Eager training images/s of minidiff in (channels-last, NCHW), if the run timed both layouts."""
    if "minidiff-nchw" in train:
        return train["minidiff"]["images_per_s"], train["minidiff-nchw"]["images_per_s"]
    if "minidiff-channels-last" in train:
        return train["minidiff-channels-last"]["images_per_s"], train["minidiff"]["images_per_s"]
    return None


def met_by(res: dict, size: str, key: str) -> str | None:
    """The first of minidiff's paths (eager, the other eager layout, compiled) that meets a target; None if none
    does, "" if the target or its measurement is missing."""
    target, ratios = res["targets"].get(key), res["sizes"][size]["ratios"]
    if target is None:
        return ""
    if key == "train_peak_memory":
        found = {name: ratios["train_peak_memory_minidiff_over_diffusers" + suffix] for suffix, _, name in PATHS
                 if "train_peak_memory_minidiff_over_diffusers" + suffix in ratios}
        return next((name for name, r in found.items() if r <= target), None) if found else ""
    return next((name for suffix, _, name in PATHS if ratios.get(key + suffix, 0) >= target), None)


def results_table(res: dict) -> list[str]:
    on_cpu = res["device"] == "cpu"
    rows = ["| model | measurement | diffusers | minidiff | minidiff speed-up | "
            + ("same, in CPU time | " if on_cpu else "") + "target | met |",
            "|---|---|---|---|---|" + ("---|" if on_cpu else "") + "---|---|"]
    targets = res["targets"]
    for size, r in sizes(res):
        name = LABELS.get(size, size)
        B = r["plan"]["train_batch"]
        lines = []   # (label, diffusers value, minidiff value, ratio key without the path suffix, path suffix)
        for suffix, raw, path in PATHS:
            if raw in r["train"]:
                lines.append((f"training, batch {B} (images/s)" + (f", minidiff {path}" if suffix else ""),
                              r["train"]["diffusers"]["images_per_s"], r["train"][raw]["images_per_s"],
                              "train_images_per_s", suffix))
        for sampler, key in SAMPLER_KEYS:
            s = r[sampler]["minidiff"]
            how = "s" if s["steps_timed"] == s["steps"] else f"s, per-step time × {s['steps']}"
            for suffix, raw, path in PATHS:
                if raw in r[sampler]:
                    lines.append((f"{sampler.upper()}-{s['steps']}, 64 images ({how})"
                                  + (f", minidiff {path}" if suffix else ""),
                                  r[sampler]["diffusers"]["seconds"], r[sampler][raw]["seconds"], key, suffix))
        for mem_key, label in (("train_peak_memory_bytes", f"peak GPU memory, training batch {B} (MiB)"),
                               ("train_peak_rss_delta_bytes", f"peak RSS growth, training batch {B} (MiB)")):
            mem = r.get(mem_key) or {}
            for suffix, raw, path in PATHS:
                if mem.get("diffusers") and mem.get(raw) is not None:
                    lines.append((label + (f", minidiff {path}" if suffix else ""), mem["diffusers"] / 2**20,
                                  mem[raw] / 2**20, mem_key, suffix))
        for label, d, m, key, suffix in lines:
            if key.endswith("_bytes"):
                ratio = m / d
                target = targets.get("train_peak_memory") if "memory_bytes" in key else None
                shown, cpu_time = f"{ratio:.2f}× the memory", ""
                met = "" if target is None else ("yes" if ratio <= target else "**no**")
            else:
                ratio, target = r["ratios"][key + suffix], targets.get(key)
                shown, cpu_time = f"**{ratio:.2f}×**", f"{r['ratios'][key + '_cpu_time' + suffix]:.2f}×"
                met = "" if target is None else ("yes" if ratio >= target else "**no**")
            rows.append(f"| {name} | {label} | {fmt(d)} | {fmt(m)} | {shown} | "
                        + (f"{cpu_time} | " if on_cpu else "")
                        + f"{'' if target is None else f'{target}×'} | {met} |")
    return rows


def is_bf16(res: dict) -> bool:
    return res["method"]["precision"].startswith("bfloat16")


def bf16_ceiling(res: dict) -> list[str]:
    """Achieved arithmetic rates against the tensor cores' dense bf16 peak."""
    out = [f"One H100 or H200 does about {BF16_PEAK / 1e12:,.0f} TFLOP/s of dense bf16 arithmetic. The rates "
           "each path reached, counting three forward passes per training image and one per sampled image and "
           "step:", ""]
    for size, r in sizes(res):
        f = r["flops_per_image_forward"]["minidiff"]
        rates = [f"diffusers {r['train']['diffusers']['images_per_s'] * 3 * f / 1e12:,.0f}"]
        rates += [f"minidiff {path} {r['train'][raw]['images_per_s'] * 3 * f / 1e12:,.0f}"
                  for _, raw, path in PATHS if raw in r["train"]]
        ddpm = r["ddpm"]
        steps = [f"{name.replace('minidiff-', 'minidiff ')} "
                 f"{64 * f * ddpm[name]['steps'] / ddpm[name]['seconds'] / 1e12:,.0f}" for name in ddpm]
        best = max(r["train"][raw]["images_per_s"] for _, raw, _ in PATHS if raw in r["train"]) * 3 * f
        out.append(f"- {LABELS.get(size, size)} ({f / 1e9:.2f} GFLOP per image forward): training "
                   + ", ".join(rates) + " TFLOP/s; DDPM sampling " + ", ".join(steps) + " TFLOP/s. The best "
                   f"training path uses {100 * best / BF16_PEAK:.0f}% of the peak.")
    out += ["", "Far below the peak, the time goes to what is not a matrix product: normalisations, activations, "
            "attention's softmax, the optimizer, and the launches of their kernels. That is the part a compiler "
            "fuses, and the part where the two libraries differ."]
    return out


def ceiling(res: dict) -> list[str]:
    peak = res["machine"].get("fp32_matmul_flops_per_s")
    if not peak:
        return []
    if res["device"] == "cuda" and is_bf16(res):
        return bf16_ceiling(res)
    if res["device"] == "cuda":
        settings = res["method"].get("cuda_settings") or {}
        if settings.get("cudnn_allow_tf32"):
            return ["A float32 matrix product is no ceiling on this GPU: PyTorch lets cuDNN run float32 "
                    "convolutions on TF32 tensor cores (its default, kept for both libraries), while the matrix "
                    f"product, without TF32, ran at {peak / 1e12:,.1f} TFLOP/s. The section on the physical limit "
                    "below puts the GPU numbers against the tensor cores' peak."]
    threads = res["machine"]["torch_threads"]
    out = [f"On this machine a large float32 matrix product runs at {peak / 1e9:,.0f} GFLOP/s with the benchmark's "
           f"{threads} thread{'s' if threads != 1 else ''}: no convolution network does its arithmetic faster. A "
           "training step costs about three forward passes (the backward pass computes two products per layer), "
           "so:", ""]
    for size, r in sizes(res):
        f = r["flops_per_image_forward"]["minidiff"]
        train_max = peak / (3 * f)
        got = r["train"]["minidiff"]["images_per_s"]
        step_min = 64 * f / peak
        s = r["ddim"]["minidiff"]
        got_step = s["seconds"] / s["steps"]
        out.append(f"- {LABELS.get(size, size)} ({f / 1e9:.2f} GFLOP per image forward): at most "
                   f"{fmt(train_max)} training images/s, where minidiff reaches {fmt(got)} "
                   f"({100 * got / train_max:.0f}% of the ceiling); one sampling step for 64 images takes at least "
                   f"{step_min:.2f} s, minidiff takes {got_step:.2f} s ({100 * step_min / got_step:.0f}%).")
    out += ["", "Close to the ceiling there is little left for any library to win in float32: the remaining time "
            "goes to normalisation, activations, attention and memory traffic, and that is where the two "
            "libraries differ."]
    return out


def ablation(res: dict) -> list[str]:
    a = res.get("ablation")
    if not a:
        return []
    fwd, trn = a["forward"], a["forward_backward"]
    out = [f"Measured in the same run on the 28-px model, batch {a['batch']} (median of {a['repeats']} interleaved "
           "repeats; forward pass as in sampling, forward+backward as in training without the optimizer). The "
           "first row reproduces the code before the attention change by forcing PyTorch's unfused attention "
           "kernel, which is what the old layout selected:", "",
           "| variant | forward (ms) | forward+backward (ms) |", "|---|---|---|"]
    for name in fwd:
        out.append(f"| {name} | {med(fwd[name]['wall_s']) * 1e3:,.0f} | {med(trn[name]['wall_s']) * 1e3:,.0f} |")

    def change(old: str, new: str, what: str, why: str) -> str:
        f0, f1 = med(fwd[old]["wall_s"]), med(fwd[new]["wall_s"])
        t0, t1 = med(trn[old]["wall_s"]), med(trn[new]["wall_s"])
        return (f"- **{what}** ({old} → {new}): forward {f0 / f1:.2f}×, forward+backward {t0 / t1:.2f}× "
                f"as fast. {why}")

    on_gpu = res["device"] == "cuda"
    out += ["", "What each change bought (ratios above 1 are speed-ups):", ""]
    out.append(change("minidiff NCHW, unfused (math) attention", "minidiff NCHW, fused attention",
                      "Fused attention",
                      "The U-Net's attention handed `scaled_dot_product_attention` a head dimension with a stride "
                      "of H·W, which the fused kernels do not accept, so PyTorch fell back to the unfused one (it "
                      "materialises the attention matrix). One small copy now gives the fused kernel its layout."))
    out.append(change("minidiff NCHW, fused attention", "minidiff channels-last, fused attention",
                      "Channels-last memory format",
                      "cuDNN has NHWC kernels as well, but in float32 this small model's time goes to kernel "
                      "launches, not to the convolutions' memory layout." if on_gpu else
                      "oneDNN's convolutions run faster on NHWC data; the model is converted once with "
                      "`model.to(memory_format=torch.channels_last)` and its inputs follow."))
    out.append(change("minidiff channels-last, num_groups=32", "minidiff channels-last, fused attention",
                      "GroupNorm with 8 groups (minidiff's default) instead of diffusers' 32",
                      "The parameter count does not depend on it. On the GPU the number of groups barely matters."
                      if on_gpu else "The parameter count does not depend on it, but PyTorch's channels-last "
                      "GroupNorm on the CPU is slow with only 1-2 channels per group."))
    out.append(change("diffusers", "diffusers channels-last", "The same layout change for diffusers",
                      "Shown for fairness." if on_gpu else
                      "Shown for fairness: with its 32 groups of 1-2 channels, channels-last does not help it."))
    if on_gpu:
        d_f, m_f = med(fwd["diffusers"]["wall_s"]), med(fwd["minidiff channels-last, fused attention"]["wall_s"])
        d_t, m_t = (med(trn["diffusers"]["wall_s"]),
                    med(trn["minidiff channels-last, fused attention"]["wall_s"]))
        out.append(f"- **minidiff against diffusers**, each in its default layout: the forward pass is "
                   f"{d_f / m_f:.2f}× and forward+backward {d_t / m_t:.2f}× as fast. Not profiled further: at batch "
                   f"{a['batch']} and 28 px each kernel takes microseconds, so the time per call is mostly kernel "
                   "launches and Python, and minidiff's blocks issue fewer operations (in-place activations and "
                   "additions, one fused attention call) — the likely reason.")
    # Runs that list the U-Net's code paths used them all.
    if res["method"].get("minidiff_unet_paths"):
        out.append("- **Not measured separately here:** in-place residual additions in the U-Net, and in-place "
                   "SiLU when no gradient is recorded (fewer fresh activation buffers: on the CPU a buffer above "
                   "glibc's 32 MB mmap threshold costs page faults on every allocation, which matters for the 35.7M "
                   "model at batch 64; under autograd an in-place SiLU would first copy its input, so training uses "
                   "a fresh one); the attention's q, k, v and output projections written as matrix products over "
                   "the channels (on channels-last activations no copy is needed, and at batch 8 on one CPU thread "
                   "PyTorch ran them as 1×1 convolutions through a slower fallback kernel); dropout masks drawn on "
                   "the CPU from uniform numbers compared with p (forward and backward about 1.5× as fast as with "
                   "PyTorch's Bernoulli sampler); and `gather` keeping one converted copy of each schedule tensor "
                   "per device and dtype (on a GPU that removes a host-to-device copy, which waits for the queued "
                   "kernels, from every training step).")
    else:
        out.append("- **Not measured separately here:** in-place SiLU and residual additions in the U-Net (fewer "
                   "fresh activation buffers), and `gather` keeping one converted copy of each schedule tensor per "
                   "device and dtype (on a GPU that removes a host-to-device copy, which waits for the queued "
                   "kernels, from every training step).")
        out.append("- **Measured before later U-Net changes:** these numbers predate the attention projections "
                   "written as matrix products and SiLU out of place under autograd, which also run on this "
                   "device, and the CPU-only dropout and upsampling changes. Rerun the benchmark here to update "
                   "them.")
    cfg = a.get("guidance_step")
    if cfg:
        one, two = med(cfg["one call of 2B rows"]["wall_s"]), med(cfg["two calls of B rows"]["wall_s"])
        out.append(f"- **Classifier-free guidance in one call** of 2B rows instead of two calls of B rows "
                   f"(conditional 28-px model, batch {a['batch']}): {two * 1e3:,.0f} → {one * 1e3:,.0f} ms per "
                   f"guided prediction, {two / one:.2f}× as fast. "
                   + ("On the GPU a small model's call costs mostly kernel launches, so twice the rows in one call "
                      "cost little more than half of two calls." if on_gpu else
                      "The CPU is busy computing either way, so this buys little here; it is meant for a GPU, "
                      "where a small model's call costs mostly kernel launches."))
    heads = a.get("cifar_attention_heads_forward")
    if heads:
        items = [(k, v) for k, v in heads.items() if k != "batch"]
        base = med(items[-1][1]["wall_s"])
        txt = ", ".join(f"{k} {fmt(med(v['wall_s']) * 1e3)} ms" for k, v in items)
        out += ["", f"The attention's head size matters too. On the 35.7M model (forward pass, batch "
                f"{heads['batch']}): {txt}. diffusers' default splits 256 channels into heads of 8, which the "
                "fused kernel runs less efficiently than minidiff's heads of 32. Against the single head of "
                f"`google/ddpm-cifar10-32`, minidiff's forward pass is {med(items[1][1]['wall_s']) / base:.2f}× as "
                f"fast: there both libraries spend most of the time in the same {'cuDNN' if on_gpu else 'oneDNN'} "
                "convolutions. The table above uses diffusers' default, as the Hugging Face course does."]
    up = a.get("cifar_upsample_transposed")
    if up:
        def times(r: dict) -> tuple[float, float]:
            return med(r["upsample, then 3x3 conv"]["wall_s"]) * 1e3, med(r["transposed convolution"]["wall_s"]) * 1e3
        (f0, f1), (t0, t1) = times(up["forward"]), times(up["forward_backward"])
        out += ["", "**The upsampling convolution as a transposed convolution.** After nearest-neighbour ×2 "
                "upsampling, a 3×3 convolution reads each input pixel up to four times, and the taps that land on "
                "the same input pixel add up: the whole operation is a stride-2 transposed convolution with a 4×4 "
                "kernel built from the 3×3 one. minidiff's `Upsample` runs it that way on the CPU: 16 instead of "
                "36 multiply-adds per input pixel and channel pair, and no upsampled image 4× the input's size. "
                f"On the 35.7M model, whose upsamplings run at 256 channels: forward pass (batch "
                f"{up['forward']['batch']}) {f0:,.0f} → {f1:,.0f} ms, {f0 / f1:.2f}× as fast; forward+backward "
                f"(batch {up['forward_backward']['batch']}) {t0:,.0f} → {t1:,.0f} ms, {t0 / t1:.2f}×. It is the "
                "same function (the test suite compares values and gradients with the plain path). Inputs under "
                f"{up['min_pixels']:,} pixels (B·H·W) or under {up['min_side']} pixels a side keep the plain path, "
                "where oneDNN's transposed convolution measured slower; so do GPUs, where it has not been measured."]
    opt = a.get("optimizer_step")
    if opt:
        slow, fast = (med(opt[k]["wall_s"]) * 1e3 for k in ("torch.optim.AdamW", "minidiff.train.AdamW"))
        out += ["", "**Channels-last kernels in the fused AdamW.** PyTorch's fused AdamW copies every non-contiguous "
                "tensor to a contiguous one before its update, and a channels-last convolution kernel is not "
                "contiguous; minidiff's `AdamW` hands it the permuted view that is, the same elements in the same "
                f"memory. One optimizer step on the 35.7M model's parameters: {slow:,.1f} → {fast:,.1f} ms, "
                f"{slow / fast:.2f}× as fast."]
    return out


def threads_advice(res: dict | None) -> str:
    text = ("- **Threads.** PyTorch starts one intra-op thread per core, and every operation waits for the slowest "
            "of them. The 28-px models' operations are small, and on a machine that is also running something "
            "else (a training run, a notebook, the test suite) a thread that shares a busy core holds up all the "
            "others: give each process `torch.set_num_threads(n)` with n no larger than the cores it has to "
            "itself, 1 when in doubt (the test suite and this benchmark use 1; set it, or `OMP_NUM_THREADS`, "
            "before the work starts).")
    probe = (res or {}).get("thread_probe")
    if probe:
        times = ", ".join(f"{k} thread{'s' if k != '1' else ''}: {med(v) * 1e3:,.0f} ms"
                          for k, v in probe["wall_s"].items())
        nice = res["machine"].get("nice")
        text += (f" Measured on this page's CPU machine with other work running (load average "
                 f"{probe['load_average'][0]:.1f} on {res['machine']['logical_cpus']} logical CPUs; the benchmark "
                 f"at nice {nice}), one forward pass of the 28-px model at batch {probe['batch']}: {times}.")
    return text


def section(res: dict, title: str) -> list[str]:
    out = [f"## {title}", "", machine_line(res), "", *models_table(res), "", *results_table(res), ""]
    if res["device"] == "cpu":
        plans = "; ".join(f"{LABELS.get(k, k)}: {r['plan']['train_repeats']} training repeats of "
                          f"{r['plan']['train_steps']} step, {r['plan']['sample_repeats']} sampling repeats of "
                          f"{r['plan']['sample_steps']} step{'s' if r['plan']['sample_steps'] > 1 else ''}"
                          for k, r in sizes(res))
        out += ["Sampling on the CPU: each sampler's real loop (diffusers' `DDPMPipeline` / `DDIMPipeline` loop, "
                "minidiff's `ddpm_sample` / `ddim_sample`) was timed for a few steps, and the time for 64 images "
                "is that per-step time multiplied by the number of steps. The speed-ups are ratios of median wall "
                "times; the ratios of median process CPU time are shown beside them, since they do not count "
                "the moments another program had the core. Repeats: " + plans + ". Memory: growth of the peak "
                "resident memory over two training steps, each library in a fresh process.", ""]
    if any("minidiff-compiled" in r.get("ddpm", {}) for r in res["sizes"].values()):
        out += ["The *minidiff compiled* rows sample through `minidiff.samplers.CompiledModel`, the opt-in fast "
                "path: `torch.compile` fuses the U-Net's small kernels and, on CUDA, replays each step as one CUDA "
                "graph. Eager PyTorch stays the default, since it is the code the chapters read."
                + (" Compiled training wraps the model in `torch.compile` (compilation time not counted)."
                   if any("minidiff-compiled" in r["train"] for r in res["sizes"].values()) else ""), ""]
    trained = [r["train"] for r in res["sizes"].values()]
    if any("minidiff-nchw" in t for t in trained):
        out += ["The *minidiff eager, NCHW* rows train the same eager model in PyTorch's default memory format, "
                "as `minidiff.train` does on a GPU; the other minidiff rows use channels-last, as it does on the "
                "CPU.", ""]
    elif any("minidiff-channels-last" in t for t in trained):
        out += ["The *minidiff eager, channels-last* rows train the same eager model in channels-last memory "
                "format, as `minidiff.train` does on the CPU; the other minidiff rows use PyTorch's default NCHW, "
                "as it does on a GPU.", ""]
    elif res["device"] != "cpu":
        layout = "channels-last" if res["method"].get("minidiff_memory_format", "").startswith("channels_last") \
            else "NCHW"
        out += [f"minidiff's U-Net ran in {layout} memory format in this run.", ""]
    missing = unfinished(res)
    if missing:
        out += ["**Not measured in this run:** " + ", ".join(LABELS.get(s, s) for s in missing)
                + ". The run was stopped by its time limit before that size finished; the sizes above are "
                "complete.", ""]
    status = {(size, key): met_by(res, size, key) for size, _ in sizes(res) for key in res["targets"]}
    missed = [f"{LABELS.get(size, size)}, {TARGET_LABELS.get(key, key)}" for (size, key), how in status.items()
              if how is None]
    for path in [name for suffix, _, name in PATHS if suffix]:
        only = [f"{LABELS.get(size, size)}, {TARGET_LABELS.get(key, key)}" for (size, key), how in status.items()
                if how == path]
        if only:
            out += [f"**Met only with the {path} path:** " + "; ".join(only) + ".", ""]
    if missed:
        if res["device"] == "cpu":
            why = ("The two libraries run the same convolutions (but for minidiff's upsampling, which is a transposed"
                   " convolution on the CPU), which "
                   "take most of the time; the ceiling and the measurements below show how little else is left to "
                   "win there in float32.")
        elif is_bf16(res):
            both = layouts(res["sizes"].get("ddpm-cifar10-32px", {}).get("train", {}))
            why = ("In bfloat16 both libraries run the convolutions and attention on the tensor cores through the "
                   "same cuDNN and fused-attention kernels, so the speed-up comes only from what surrounds them."
                   + (f" Eager channels-last, the same arithmetic in another layout, is "
                      f"{'slower' if both[0] < both[1] else 'faster'} than NCHW here." if both else "")
                   + " Not profiled further.")
        else:
            why = ("In float32 the 35.7M model's convolutions and attention are real work for the GPU, and "
                   "both libraries hand the same ones to cuDNN; what minidiff saves is launch and Python overhead, "
                   "which is most of a small model's time but a smaller share of a large one's.")
        out += ["**Targets not met:** " + "; ".join(missed) + ". " + why, ""]
    cl = ceiling(res)
    if cl:
        out += ["### Against the physical ceiling", "", *cl, ""]
    ab = ablation(res)
    if ab:
        out += ["### What each optimisation bought", "", *ab, ""]
    return out


def gpu_layout_advice(res: dict | None) -> str:
    both = layouts((res or {}).get("sizes", {}).get("ddpm-cifar10-32px", {}).get("train", {}))
    if both is None:
        return "it is the usual advice for convolutions in bf16, but it has not been measured here in bf16."
    cl, nchw = both
    return (f"in bf16 on {res['machine']['gpu']} the 35.7M model trained at {nchw:,.0f} images/s in PyTorch's "
            f"default layout and at {cl:,.0f} in channels-last (GPU bf16 section above)"
            + (", although channels-last is the usual advice for convolutions on tensor cores." if nchw > cl else
               "."))


def page(results: Path = RESULTS) -> str:
    cpu, cuda, cuda_bf16 = load("cpu", results), load("cuda", results), load("cuda", results, bf16=True)
    out = ["# Performance", "",
           "*Generated by `python benchmarks/report.py` from the result files in `benchmarks/results/`. Every "
           "number here was measured by `benchmarks/bench.py` and is quoted with the machine it ran on; compare "
           "numbers only within one run.*", "",
           "A reader finishes a chapter only if training and sampling are quick on the machine at hand: a laptop "
           "CPU or a free GPU. The benchmark measures minidiff against the reference implementation, "
           "[diffusers](https://github.com/huggingface/diffusers), in one run on one machine:", "",
           "```bash",
           "python benchmarks/bench.py --device cpu    # 6 to 8 minutes on one core",
           "python benchmarks/bench.py --device cuda   # on a GPU: full sampling runs and the compiled paths",
           "python benchmarks/bench.py --device cuda --bf16   # the same in bfloat16 autocast, both libraries",
           "python benchmarks/report.py                # rewrite this page from the newest results",
           "```", "",
           "## How the comparison is made", "",
           "- **Matched models.** diffusers' `UNet2DModel` and `DDPMScheduler` / `DDIMScheduler`, built locally, "
           "against minidiff's `UNet` with the same architecture and parameter count (see the tables), the same "
           "resolution, batch, precision and number of threads. Float32 throughout, and on the GPU a second run with "
           "both libraries under bfloat16 autocast (the network in bf16, the samplers' updates and the loss in "
           "float32).",
           "- **Each library as its examples use it.** diffusers trains with the Hugging Face diffusion course's "
           "loop (`add_noise`, MSE, AdamW) and samples with the loops of `DDPMPipeline` and `DDIMPipeline`; "
           "minidiff trains with `eps_loss` and the optimizer of `minidiff.train`, samples with `ddpm_sample` and "
           "`ddim_sample`, and keeps its U-Net in channels-last memory format on the CPU, as `minidiff.train` does "
           "(each GPU section names the layouts it measured). No gradient clipping or EMA on "
           "either side; linear betas, no clipping of x0, DDIM with eta = 0.",
           "- **Timing.** Random images as data; one warm-up call excluded; the two libraries alternate within "
           "every repeat, so a change of machine load hits both; the median wall-clock time is reported.", ""]
    out += section(cpu, "CPU") if cpu else ["## CPU", "", "No CPU result has been committed yet.", ""]
    if cuda:
        out += section(cuda, "GPU")
        if cuda_bf16:
            out += section(cuda_bf16, "GPU, bfloat16 autocast")
    else:
        out += ["## GPU", "",
                "No GPU result has been committed yet: no GPU was available when this page was generated, so "
                "the GPU targets (training 1.5×, DDPM-1000 5×, DDIM-50 3×, peak training memory at most "
                "diffusers') are unmeasured. The GPU path is ready and its fast paths are tested on the CPU "
                "against eager execution: `python benchmarks/bench.py "
                "--device cuda` runs the full DDPM-1000 and DDIM-50 loops, records peak GPU memory, and also "
                "times minidiff's opt-in fast paths — `minidiff.samplers.CompiledModel` (`torch.compile` with "
                "CUDA graphs, `mode=\"reduce-overhead\"`) for sampling and a `torch.compile`d model for "
                "training. What they should change there: no host-to-device copy of schedule values per step "
                "(`gather` caches them on the device), no host synchronisation inside the sampling loops, fused "
                "AdamW, one kernel launch per sampling step once the model is a CUDA graph.", "", GPU_ANCHOR, ""]
    out += ["## The physical limit on a GPU", "", CEILING]
    flops = (cpu or cuda or {}).get("sizes", {}).get("fmnist-28px", {}).get("flops_per_image_forward", {})
    if flops:
        per_image = 3 * flops["diffusers"]
        low, high = 0.25 * 989e12 / per_image, 0.5 * 989e12 / per_image
        if cuda and "fmnist-28px" in cuda["sizes"]:
            train = cuda["sizes"]["fmnist-28px"]["train"]
            d, m = train["diffusers"]["images_per_s"], train["minidiff"]["images_per_s"]
            measured = (f"diffusers' {d:,.0f} and minidiff's {m:,.0f} images/s (float32, measured above on "
                        f"{cuda['machine']['gpu']}) are {100 * d / high:.0f}-{100 * d / low:.0f}% and "
                        f"{100 * m / high:.0f}-{100 * m / low:.0f}% of it")
        else:
            measured = f"diffusers' 2,535 images/s is {100 * 2535 / high:.0f}-{100 * 2535 / low:.0f}% of it"
        out[-1] += (f" The 1.7M-parameter 28-px model costs {per_image / 1e9:.1f} GFLOP per training image "
                    f"(three forward passes of {flops['diffusers'] / 1e9:.2f}), so 25-50% of that peak would be "
                    f"{round(low, -4):,.0f}-{round(high, -4):,.0f} images/s; {measured}. The GPU waits for the "
                    "CPU to launch hundreds of small kernels per step: fused kernels, CUDA graphs and larger "
                    "batches are what close that gap, not faster arithmetic.")
    out += ["",
            "## Settings for your own machine", "",
            threads_advice(cpu),
            "- **Channels-last.** `model.to(memory_format=torch.channels_last)` before training or sampling a "
            "`UNet` on the CPU (measured above; inputs follow the weights' format); `minidiff.train` does it for "
            "you there. On a GPU, measure before converting: " + gpu_layout_advice(cuda_bf16),
            "- **Compiled sampling on a GPU.** `ddim_sample(minidiff.samplers.CompiledModel(model.eval()), ...)`; "
            "the first call compiles, later steps replay a CUDA graph. Eager stays the default: it is the code "
            "the chapters read.", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of result files (default: %(default)s)")
    p.add_argument("--page", type=Path, default=PAGE, help="page to write (default: %(default)s)")
    args = p.parse_args(argv)
    args.page.write_text(page(args.results))
    print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
