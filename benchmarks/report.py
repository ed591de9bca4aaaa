"""Write the book's Performance page (``book/performance.md``) from the committed benchmark results.

    python benchmarks/report.py            # after python benchmarks/bench.py --device cpu|cuda

Uses the newest ``benchmarks/results/<device>-<date>.json`` of each device (float32) and the newest
``cuda-bf16-<date>.json`` (bfloat16 autocast). Every number on the page comes from those files; the page names the
machine each was measured on. The page's prose is the Markdown template ``benchmarks/performance_template.md``
(Jinja2), with the names and table phrases it shares in ``benchmarks/performance_phrases.md``; the project's
speed targets are ``benchmarks/targets.json``. This script only computes what fills the template: medians, their
spreads over the repeats, ratios and tables, as formatted numbers and ids.

Spreads: every timing was repeated, the two libraries alternating within each repeat. A value is shown as its
median with the range over the repeats in brackets; a speed-up as the ratio of the medians with the range of the
per-repeat ratios (each repeat times both libraries back to back, so its ratio is a paired measurement).
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
TEMPLATE = Path(__file__).resolve().with_name("performance_template.md")
TARGETS = json.loads(Path(__file__).resolve().with_name("targets.json").read_text())

SIZES = ("fmnist-28px", "ddpm-cifar10-32px")   # the benchmark's sizes, smallest model first
BF16_PEAK = 989e12   # dense bf16 tensor-core FLOP/s of one H100 SXM or H200 (the anchors' figure)
# diffusers alone on one H200 (measured for this project in a different run: shown only when no GPU result exists).
GPU_ANCHOR = {"train_28": 2535, "train_357": 1525, "ddpm_28": 13.6, "ddim_28": 0.57, "ddpm_357": 19.2,
              "ddim_357": 0.88}

SAMPLER_KEYS = (("ddpm", "ddpm_1000_seconds"), ("ddim", "ddim_50_seconds"))
# minidiff's paths in a result: (suffix of its ratio keys, its name in the raw results; performance_phrases.md
# says what the page calls it). The default is eager, in minidiff.train's layout for the device; on CUDA the
# benchmark also times the other layout and a compiled model. (Runs before the GPU default became NCHW timed
# channels-last plus "minidiff-nchw".)
PATHS = (("", "minidiff"), ("_nchw", "minidiff-nchw"), ("_channels_last", "minidiff-channels-last"),
         ("_compiled", "minidiff-compiled"))


# ------------------------------------------------------------------------------------------ reading results
def load(device: str, results: Path = RESULTS, *, bf16: bool = False) -> dict | None:
    """The newest result of ``device`` in float32 (``<device>-<date>.json``) or bf16 (``<device>-bf16-<date>``)."""
    pattern = re.compile(rf"{device}-{'bf16-' if bf16 else ''}\d{{4}}-\d{{2}}-\d{{2}}\.json")
    files = sorted(f for f in results.glob(f"{device}-*.json") if pattern.fullmatch(f.name))
    return json.loads(files[-1].read_text()) if files else None


def sizes(res: dict) -> list[tuple[str, dict]]:
    """The measured sizes, smallest model first."""
    return sorted(res["sizes"].items(), key=lambda kv: SIZES.index(kv[0]) if kv[0] in SIZES else len(SIZES))


def unfinished(res: dict) -> list[str]:
    """Sizes the run was asked for but did not finish (a run stopped early keeps the sizes it had done)."""
    asked = re.search(r"--sizes[ =](\S+)", res.get("command", ""))
    wanted = asked.group(1).split(",") if asked else list(SIZES)
    return [s for s in wanted if s not in res["sizes"]] if res.get("partial") else []


def layout_timings(train: dict) -> tuple[dict, dict] | None:
    """minidiff's eager training timings in (channels-last, NCHW), if the run timed both layouts."""
    if "minidiff-nchw" in train:                 # older runs: channels-last by default, NCHW as the extra
        return train["minidiff"], train["minidiff-nchw"]
    if "minidiff-channels-last" in train:
        return train["minidiff-channels-last"], train["minidiff"]
    return None


def layouts(train: dict) -> tuple[float, float] | None:
    """Eager training images/s of minidiff in (channels-last, NCHW), if the run timed both layouts."""
    both = layout_timings(train)
    return None if both is None else (both[0]["images_per_s"], both[1]["images_per_s"])


def is_bf16(res: dict) -> bool:
    return res["method"]["precision"].startswith("bfloat16")


def targets(res: dict) -> dict:
    """The project's targets for the device of a result (``benchmarks/targets.json``)."""
    return TARGETS[res["device"]]


def path_ratios(ratios: dict, key: str) -> list[tuple[str, float]]:
    """(path, ratio) of each of minidiff's paths that has a ratio for a target's ``key``, eager first."""
    key = "train_peak_memory_minidiff_over_diffusers" if key == "train_peak_memory" else key
    return [(raw, ratios[key + suffix]) for suffix, raw in PATHS if key + suffix in ratios]


def met_by(res: dict, size: str, key: str) -> str | None:
    """The first of minidiff's paths (eager, the other eager layout, compiled) that meets a target; None if none
    does, "" if the target or its measurement is missing."""
    target, ratios = targets(res).get(key), res["sizes"][size]["ratios"]
    if target is None:
        return ""
    if key == "train_peak_memory":
        found = path_ratios(ratios, key)
        return next((raw for raw, r in found if r <= target), None) if found else ""
    return next((raw for suffix, raw in PATHS if ratios.get(key + suffix, 0) >= target), None)


# ------------------------------------------------------------------------------------------ numbers
def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def fmt_range(lo: float, hi: float) -> str:
    return f"{fmt(lo)}–{fmt(hi)}"


def throughput(r: dict, size: dict) -> dict:
    """Training images/s: the median and its range over the repeats (each repeat runs ``train_steps`` steps)."""
    per_repeat = size["plan"]["train_batch"] * size["plan"].get("train_steps", 1)
    walls = r["wall_s"]
    return {"median": r["images_per_s"], "low": per_repeat / max(walls), "high": per_repeat / min(walls),
            "repeats": len(walls)}


def sampling_time(r: dict) -> dict:
    """Seconds for 64 images: the median and its range over the repeats (per-step time x steps if extrapolated)."""
    scale = r["steps"] / r["steps_timed"]
    walls = r["wall_s"]
    return {"median": r["seconds"], "low": min(walls) * scale, "high": max(walls) * scale, "repeats": len(walls)}


def paired_ratios(diffusers: dict, minidiff: dict) -> tuple[float, float]:
    """Range of the per-repeat speed-ups diffusers' wall time / minidiff's (both are timed in every repeat)."""
    ratios = [d / m for d, m in zip(diffusers["wall_s"], minidiff["wall_s"])]
    return min(ratios), max(ratios)


def with_range(value: dict) -> str:
    return f"{fmt(value['median'])} ({fmt_range(value['low'], value['high'])})"


def time_with_range(value: dict) -> str:
    """Seconds, minutes or hours, chosen by the median, for the median and its range alike."""
    m = value["median"]
    scale, unit = (3600, "h") if m >= 2 * 3600 else (60, "min") if m >= 120 else (1, "s")
    return (f"{fmt(m / scale)} {unit} ({fmt_range(value['low'] / scale, value['high'] / scale)})")


def speedup(ratio: float, lo: float, hi: float) -> str:
    return f"**{ratio:.2f}×** ({lo:.2f}–{hi:.2f})"


# ------------------------------------------------------------------------------------------ one run
def measurements(res: dict, size: str, r: dict) -> list[dict]:
    """One row per measurement of one size: diffusers, minidiff (each path) and the speed-up, with spreads."""
    rows, batch = [], r["plan"]["train_batch"]
    for suffix, raw in PATHS:
        if raw in r["train"]:
            d, m = throughput(r["train"]["diffusers"], r), throughput(r["train"][raw], r)
            lo, hi = paired_ratios(r["train"]["diffusers"], r["train"][raw])
            rows.append(dict(kind="train", batch=batch, path=raw, suffix=suffix, speed=True,
                             key="train_images_per_s", diffusers=with_range(d), minidiff=with_range(m),
                             ratio=r["ratios"]["train_images_per_s" + suffix],
                             speedup=speedup(r["ratios"]["train_images_per_s" + suffix], lo, hi),
                             cpu_time=r["ratios"].get("train_images_per_s_cpu_time" + suffix)))
    for sampler, key in SAMPLER_KEYS:
        s = r[sampler]["minidiff"]
        for suffix, raw in PATHS:
            if raw in r[sampler]:
                d, m = sampling_time(r[sampler]["diffusers"]), sampling_time(r[sampler][raw])
                lo, hi = paired_ratios(r[sampler]["diffusers"], r[sampler][raw])
                rows.append(dict(kind="sampling", sampler=sampler, steps=s["steps"],
                                 extrapolated=s["steps_timed"] != s["steps"], path=raw, suffix=suffix, speed=True,
                                 key=key, diffusers=with_range(d), minidiff=with_range(m),
                                 ratio=r["ratios"][key + suffix], speedup=speedup(r["ratios"][key + suffix], lo, hi),
                                 cpu_time=r["ratios"].get(key + "_cpu_time" + suffix)))
    return rows + memory_rows(r)


def memory_rows(r: dict) -> list[dict]:
    """Peak GPU memory or peak RSS growth in training, diffusers against each of minidiff's paths."""
    rows = []
    for mem_key, kind in (("train_peak_memory_bytes", "gpu_memory"), ("train_peak_rss_delta_bytes", "rss")):
        mem = r.get(mem_key) or {}
        for suffix, raw in PATHS:
            if mem.get("diffusers") and mem.get(raw) is not None:
                ratio = mem[raw] / mem["diffusers"]
                rows.append(dict(kind=kind, batch=r["plan"]["train_batch"], path=raw, suffix=suffix, speed=False,
                                 key="train_peak_memory" if kind == "gpu_memory" else None,
                                 diffusers=fmt(mem["diffusers"] / 2**20), minidiff=fmt(mem[raw] / 2**20),
                                 ratio=ratio, speedup=f"{ratio:.2f}×", cpu_time=None))
    return rows


def glance(r: dict) -> dict:
    """minidiff's default (eager) numbers for one size, in reader's units: training in both layouts and compiled
    where the run timed them, sampling (also compiled, if timed)."""
    train, both = r["train"], layout_timings(r["train"])
    compiled = train.get("minidiff-compiled")
    out = {"train": with_range(throughput(train["minidiff"], r)), "batch": r["plan"]["train_batch"],
           "layouts": None if both is None else {"channels_last": with_range(throughput(both[0], r)),
                                                 "nchw": with_range(throughput(both[1], r))},
           "train_compiled": with_range(throughput(compiled, r)) if compiled else None}
    for sampler, _ in SAMPLER_KEYS:
        out[sampler] = time_with_range(sampling_time(r[sampler]["minidiff"]))
        compiled = r[sampler].get("minidiff-compiled")
        out[sampler + "_compiled"] = time_with_range(sampling_time(compiled)) if compiled else None
        out[sampler + "_steps"] = r[sampler]["minidiff"]["steps"]
    return out


def machine(res: dict) -> dict:
    m, v = res["machine"], res["versions"]
    start = (m.get("load_average_at_start") or [0.0])[0]
    shared = start >= max(0.5, 0.25 * m["logical_cpus"])
    runs = [{"sizes": list(r["sizes"]), "date": r["date"][:10]}
            for r in res.get("runs", [])] if len(res.get("runs", [])) > 1 else []
    return dict(name=m["gpu"] or m["cpu_model"], gpu=bool(m["gpu"]), logical_cpus=m["logical_cpus"],
                threads=m["torch_threads"], python=v["python"], torch=v["torch"],
                diffusers=v["diffusers"], minidiff=v["minidiff"], precision=res["method"]["precision"],
                date=res["date"][:10], minutes=(f"{res['seconds_total'] / 60:.1f}" if "seconds_total" in res else None),
                runs=runs, shared=shared, load_start=f"{start:.1f}",
                load_end=f"{m.get('load_average_at_end', [float('nan')])[0]:.1f}")


def configs(res: dict) -> list[dict]:
    """Both libraries' model configurations of each size, their parameter counts and forward GFLOP."""
    out = []
    for size, r in sizes(res):
        d, m = r["configs"]["diffusers"], r["configs"]["minidiff"]
        flops = r["flops_per_image_forward"]
        out.append(dict(
            size=size,
            d=dict(channels=str(tuple(d["block_out_channels"])), layers=d["layers_per_block"],
                   attention=sum("Attn" in b for b in d["down_block_types"]), dropout=d.get("dropout", 0.0)),
            m=dict(base=m["base_channels"], mults=str(tuple(m["channel_mults"])), res_blocks=m["num_res_blocks"],
                   attention=str(tuple(int(a) for a in m["attention_levels"])), groups=m["num_groups"],
                   dropout=m["dropout"]),
            params={lib: f"{n:,}" for lib, n in r["params"].items()},
            gflop={lib: f"{flops[lib] / 1e9:.2f}" for lib in ("diffusers", "minidiff")}))
    return out


def ceiling(res: dict) -> dict | None:
    """What the hardware allows: a float32 matrix product on the CPU, the tensor cores' bf16 peak on the GPU."""
    peak = res["machine"].get("fp32_matmul_flops_per_s")
    if not peak:
        return None
    if res["device"] == "cuda" and is_bf16(res):
        rows = []
        for size, r in sizes(res):
            f = r["flops_per_image_forward"]["minidiff"]
            train = [(raw, r["train"][raw]["images_per_s"] * 3 * f / 1e12)
                     for raw in ("diffusers", *(raw for _, raw in PATHS)) if raw in r["train"]]
            ddpm = [(name, 64 * f * s["steps"] / s["seconds"] / 1e12) for name, s in r["ddpm"].items()]
            best = max(r["train"][raw]["images_per_s"] for _, raw in PATHS if raw in r["train"]) * 3 * f
            rows.append(dict(size=size, gflop=f"{f / 1e9:.2f}", train=[(n, f"{x:,.0f}") for n, x in train],
                             ddpm=[(n, f"{x:,.0f}") for n, x in ddpm], best=f"{100 * best / BF16_PEAK:.0f}"))
        return dict(kind="bf16", peak_tflops=f"{BF16_PEAK / 1e12:,.0f}", rows=rows)
    if res["device"] == "cuda":
        tf32 = bool((res["method"].get("cuda_settings") or {}).get("cudnn_allow_tf32"))
        return dict(kind="tf32", matmul_tflops=f"{peak / 1e12:,.1f}") if tf32 else None
    rows = []
    for size, r in sizes(res):
        f = r["flops_per_image_forward"]["minidiff"]
        train_max, got = peak / (3 * f), r["train"]["minidiff"]["images_per_s"]
        s = r["ddim"]["minidiff"]
        step_min, got_step = 64 * f / peak, s["seconds"] / s["steps"]
        rows.append(dict(size=size, gflop=f"{f / 1e9:.2f}", train_max=fmt(train_max),
                         train=fmt(got), train_pct=f"{100 * got / train_max:.0f}", step_min=f"{step_min:.2f}",
                         step=f"{got_step:.2f}", step_pct=f"{100 * step_min / got_step:.0f}"))
    return dict(kind="cpu", gflops=f"{peak / 1e9:,.0f}", threads=res["machine"]["torch_threads"], rows=rows)


def ablation(res: dict) -> dict | None:
    """The measured effect of each optimisation (same run), as numbers for the template's sentences."""
    a = res.get("ablation")
    if not a:
        return None
    fwd, trn = a["forward"], a["forward_backward"]

    def change(old: str, new: str) -> dict:
        return dict(old=old, new=new, forward=time_ratio(fwd, old, new), train=time_ratio(trn, old, new))

    on_gpu = res["device"] == "cuda"
    return dict(batch=a["batch"], repeats=a["repeats"], on_gpu=on_gpu,
                rows=[dict(name=k, forward=f"{med(fwd[k]['wall_s']) * 1e3:,.0f}",
                           train=f"{med(trn[k]['wall_s']) * 1e3:,.0f}") for k in fwd],
                whole=change(PLAIN, "minidiff NCHW, fused attention" if on_gpu else
                             "minidiff channels-last, fused attention") if PLAIN in fwd else None,
                fused=change("minidiff NCHW, unfused (math) attention", "minidiff NCHW, fused attention"),
                channels_last=change("minidiff NCHW, fused attention", "minidiff channels-last, fused attention"),
                groups=change("minidiff channels-last, num_groups=32", "minidiff channels-last, fused attention"),
                diffusers_layout=change("diffusers", "diffusers channels-last"),
                unet_paths=bool(res["method"].get("minidiff_unet_paths")),
                against=change("diffusers", "minidiff channels-last, fused attention") if on_gpu else None,
                guidance=guidance_call(a.get("guidance_step")),
                heads=attention_heads(a.get("cifar_attention_heads_forward")),
                upsample=transposed_upsampling(a.get("cifar_upsample_transposed")),
                adamw=adamw_views(a.get("optimizer_step")))


PLAIN = "minidiff plain (without minidiff.fast), NCHW"     # the ablation's row of the book's own U-Net


def code_change(res: dict | None, results: Path) -> dict | None:
    """The same benchmark on the same machine with the code before minidiff.fast (``<name>-before-minidiff-fast.json``
    beside the newest CPU result): the speed-ups over diffusers before and after, per size and measure."""
    if res is None:
        return None
    stem = f"{res['device']}-{res['date'][:10]}"
    path = results / f"{stem}-before-minidiff-fast.json"
    if not path.exists():
        return None
    before = json.loads(path.read_text())

    def speedups(run: dict, size: str) -> dict:     # minidiff's eager path: speed-up with its paired range
        return {m["key"]: m["speedup"] for m in measurements(run, size, run["sizes"][size])
                if m["path"] == "minidiff" and m["speed"]}

    def span(text: str) -> tuple[float, float]:    # "(lo–hi)" of a formatted speed-up
        lo, hi = re.search(r"\(([\d.]+)–([\d.]+)\)", text).groups()
        return float(lo), float(hi)

    rows = [dict(size=size, key=key, before=was, after=speedups(res, size)[key])
            for size, _ in sizes(res) if size in before["sizes"]
            for key, was in speedups(before, size).items() if key in speedups(res, size)]
    for row in rows:
        (a, b), (c, d) = span(row["before"]), span(row["after"])
        row["apart"] = b < c or d < a                 # the two runs' ranges do not overlap
    return dict(file=path.name, code=before.get("code", ""), date=before["date"][:16].replace("T", " "),
                after_date=res["date"][:16].replace("T", " "), rows=rows)


def time_ratio(table: dict, old: str, new: str) -> str:
    """How many times as fast ``new`` ran as ``old`` (median wall times) in one ablation table."""
    return f"{med(table[old]['wall_s']) / med(table[new]['wall_s']):.2f}"


def guidance_call(cfg: dict | None) -> dict | None:
    """A guided prediction as one call of 2B rows against two calls of B rows (ms)."""
    if not cfg:
        return None
    one, two = med(cfg["one call of 2B rows"]["wall_s"]), med(cfg["two calls of B rows"]["wall_s"])
    return dict(two=f"{two * 1e3:,.0f}", one=f"{one * 1e3:,.0f}", ratio=f"{two / one:.2f}")


def attention_heads(heads: dict | None) -> dict | None:
    """The 35.7M model's forward pass with each head layout (ms), and minidiff's against one head."""
    if not heads:
        return None
    items = [(k, v) for k, v in heads.items() if k != "batch"]
    base = med(items[-1][1]["wall_s"])
    return dict(batch=heads["batch"], times=[(k, fmt(med(v["wall_s"]) * 1e3)) for k, v in items],
                vs_one_head=f"{med(items[1][1]['wall_s']) / base:.2f}")


def transposed_upsampling(up: dict | None) -> dict | None:
    """Upsampling then a 3x3 convolution against the equivalent transposed convolution (ms), forward and training."""
    if not up:
        return None

    def times(r: dict) -> tuple[float, float]:
        return med(r["upsample, then 3x3 conv"]["wall_s"]) * 1e3, med(r["transposed convolution"]["wall_s"]) * 1e3

    (f0, f1), (t0, t1) = times(up["forward"]), times(up["forward_backward"])
    return dict(forward_batch=up["forward"]["batch"], train_batch=up["forward_backward"]["batch"],
                f0=f"{f0:,.0f}", f1=f"{f1:,.0f}", fr=f"{f0 / f1:.2f}", t0=f"{t0:,.0f}", t1=f"{t1:,.0f}",
                tr=f"{t0 / t1:.2f}", min_pixels=f"{up['min_pixels']:,}", min_side=up["min_side"])


def adamw_views(opt: dict | None) -> dict | None:
    """One optimizer step of torch's fused AdamW against minidiff's, which hands it contiguous views (ms)."""
    if not opt:
        return None
    ours = "minidiff.fast.AdamW" if "minidiff.fast.AdamW" in opt else "minidiff.train.AdamW"   # its older home
    slow, fast = (med(opt[k]["wall_s"]) * 1e3 for k in ("torch.optim.AdamW", ours))
    return dict(slow=f"{slow:,.1f}", fast=f"{fast:,.1f}", ratio=f"{slow / fast:.2f}")


def acceptance(res: dict) -> dict:
    """The project's speed targets for this device and how each was met (kept apart from the reader's page)."""
    status = {(size, key): met_by(res, size, key) for size, _ in sizes(res) for key in targets(res)}
    rows = [dict(size=size, key=key, target=target, memory=key == "train_peak_memory", met=status[size, key],
                 measured=[(raw, f"{x:.2f}×") for raw, x in path_ratios(r["ratios"], key)])
            for size, r in sizes(res) for key, target in targets(res).items() if status[size, key] != ""]
    only = [dict(path=raw, targets=[pair for pair, how in status.items() if how == raw])
            for suffix, raw in PATHS if suffix]
    both = layouts(res["sizes"].get("ddpm-cifar10-32px", {}).get("train", {}))
    return dict(rows=rows, missed=[pair for pair, how in status.items() if how is None],
                only=[o for o in only if o["targets"]],
                channels_last_slower=None if both is None else both[0] < both[1])


def run(res: dict, run_id: str) -> dict:
    """Everything the template shows about one result file (``run_id``: "cpu", "gpu" or "gpu-bf16")."""
    trained = [r["train"] for r in res["sizes"].values()]
    layout = None
    if any("minidiff-nchw" in t for t in trained):
        layout = "nchw-extra"
    elif any("minidiff-channels-last" in t for t in trained):
        layout = "channels-last-extra"
    elif res["device"] != "cpu":
        layout = ("channels-last" if res["method"].get("minidiff_memory_format", "").startswith("channels_last")
                  else "NCHW")
    on_cpu = res["device"] == "cpu"
    rows = {size: measurements(res, size, r) for size, r in sizes(res)}
    cpu_gap = max((abs(row["ratio"] - row["cpu_time"]) for rs in rows.values() for row in rs
                   if row["cpu_time"] is not None), default=None)
    return dict(
        id=run_id, anchor=f"perf-{run_id}", device=res["device"], on_cpu=on_cpu, bf16=is_bf16(res),
        machine=machine(res),
        sizes=[dict(id=size, rows=rows[size], glance=glance(r), params=f"{r['params']['minidiff'] / 1e6:.1f}M",
                    plan=r["plan"]) for size, r in sizes(res)],
        configs=configs(res), extrapolated=on_cpu,
        cpu_time_gap=None if cpu_gap is None else f"{cpu_gap:.2f}",
        cpu_time_same=cpu_gap is not None and cpu_gap < 0.005,
        compiled_sampling=any("minidiff-compiled" in r.get("ddpm", {}) for r in res["sizes"].values()),
        compiled_training=any("minidiff-compiled" in t for t in trained), layout=layout,
        missing=unfinished(res), ceiling=ceiling(res),
        ablation=ablation(res), acceptance=acceptance(res))


def speedup_span(r: dict | None, path: str = "minidiff") -> str | None:
    """The smallest and largest speed-up of one minidiff path over diffusers in a run (time and throughput)."""
    if r is None:
        return None
    xs = [row["ratio"] for s in r["sizes"] for row in s["rows"] if row["path"] == path and row["speed"]]
    return f"{min(xs):.2f}–{max(xs):.2f}×" if xs else None


def thread_probe(res: dict | None) -> dict | None:
    probe = (res or {}).get("thread_probe")
    if not probe:
        return None
    return dict(load=f"{probe['load_average'][0]:.1f}", logical_cpus=res["machine"]["logical_cpus"],
                nice=res["machine"].get("nice"), batch=probe["batch"],
                times=[(int(k), f"{med(v) * 1e3:,.0f}") for k, v in probe["wall_s"].items()])


def gpu_limit(cpu: dict | None, cuda: dict | None) -> dict | None:
    """The 28-px model against 25-50% of the tensor cores' bf16 peak."""
    flops = (cpu or cuda or {}).get("sizes", {}).get("fmnist-28px", {}).get("flops_per_image_forward", {})
    if not flops:
        return None
    per_image = 3 * flops["diffusers"]
    low, high = 0.25 * BF16_PEAK / per_image, 0.5 * BF16_PEAK / per_image
    out = dict(peak_tflops=f"{BF16_PEAK / 1e12:,.0f}", per_image=f"{per_image / 1e9:.1f}",
               forward=f"{flops['diffusers'] / 1e9:.2f}",
               low=f"{round(low, -4):,.0f}", high=f"{round(high, -4):,.0f}", measured=None)
    if cuda and "fmnist-28px" in cuda["sizes"]:
        train = cuda["sizes"]["fmnist-28px"]["train"]
        d, m = train["diffusers"]["images_per_s"], train["minidiff"]["images_per_s"]
        out["measured"] = dict(gpu=cuda["machine"]["gpu"], diffusers=f"{d:,.0f}", minidiff=f"{m:,.0f}",
                               d_pct=f"{100 * d / high:.0f}-{100 * d / low:.0f}",
                               m_pct=f"{100 * m / high:.0f}-{100 * m / low:.0f}")
    else:
        anchor = GPU_ANCHOR["train_28"]
        out["anchor_pct"] = f"{100 * anchor / high:.0f}-{100 * anchor / low:.0f}"
    return out


def gpu_layout(bf16: dict | None) -> dict | None:
    both = layouts((bf16 or {}).get("sizes", {}).get("ddpm-cifar10-32px", {}).get("train", {}))
    if both is None:
        return None
    return dict(gpu=bf16["machine"]["gpu"], channels_last=f"{both[0]:,.0f}", nchw=f"{both[1]:,.0f}",
                nchw_faster=both[1] > both[0])


# ------------------------------------------------------------------------------------------ the page
def context(results: Path = RESULTS) -> dict:
    cpu, cuda, cuda_bf16 = load("cpu", results), load("cuda", results), load("cuda", results, bf16=True)
    runs = [run(cpu, "cpu")] if cpu else []
    if cuda:
        runs.append(run(cuda, "gpu"))
        if cuda_bf16:
            runs.append(run(cuda_bf16, "gpu-bf16"))
    by_id = {r["id"]: r for r in runs}
    return dict(runs=runs, cpu=by_id.get("cpu"), gpu=by_id.get("gpu"), gpu_bf16=by_id.get("gpu-bf16"),
                cpu_span=speedup_span(by_id.get("cpu")), gpu_span=speedup_span(by_id.get("gpu")),
                gpu_compiled_span=speedup_span(by_id.get("gpu"), "minidiff-compiled"),
                threads=thread_probe(cpu), limit=gpu_limit(cpu, cuda), layout_bf16=gpu_layout(cuda_bf16),
                moved=code_change(cpu, results),
                anchor=GPU_ANCHOR, targets=TARGETS)


def page(results: Path = RESULTS) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    text = env.get_template(TEMPLATE.name).render(**context(results))
    text = re.sub(r"\n{3,}", "\n\n", text)           # blocks left out leave no runs of blank lines
    return text.strip() + "\n"


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
