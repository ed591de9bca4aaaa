"""Run the chapters in full mode and collect their figures into the book's gallery page.

    python tools/gallery.py                       # every chapter, full mode (meant for a GPU machine)
    python tools/gallery.py --chapters 04 07      # some chapters
    python tools/gallery.py --quick --out /tmp/g  # a trial run in quick mode (CPU), written elsewhere

Each chapter is executed from a copy (the committed notebooks stay as they are) with ``MINIDIFF_QUICK=0``.
The figures it draws are saved as PNG files under ``--out`` with their captions, and ``--out``/gallery.md
shows them chapter by chapter, with the device, the run time and the minidiff version of the run. The run
times are also written to ``--out``/runs.json: they are the measured full-mode costs that the setup page
quotes.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"minidiff ready \((?P<where>[^)]*)\): device = (?P<device>\S+), torch (?P<torch>\S+), "
                   r"quick mode (?P<mode>on|off)")


def run_chapter(path: Path, *, quick: bool, timeout: int) -> tuple[dict, float]:
    """Execute one chapter in a fresh kernel; return the executed notebook and its wall time in seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:   # the widgets need a live kernel and a person: the book build skips them too
        if "skip-execution" in cell.metadata.get("tags", []):
            cell.source = ""
    os.environ["MINIDIFF_QUICK"] = "1" if quick else "0"
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb, time.perf_counter() - start


def figures_of(nb) -> list[tuple[bytes, str]]:
    """(PNG bytes, caption) for every image a chapter drew, in order."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption", "")
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                found.append((base64.b64decode(png), caption))
    return found


def device_line(nb) -> dict:
    """What the chapter's first cell reported: device, torch version, quick mode."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            match = READY.search(out.get("text", ""))
            if match:
                return match.groupdict()
    return {}


def write_page(out: Path, runs: list[dict]) -> Path:
    lines = ["# Gallery: the chapters in full mode", "",
             "What each chapter draws when it runs its full-length version, made by `python tools/gallery.py`.", ""]
    for run in runs:
        lines += [f"## {run['title']}", "",
                  f"Run on {run['device']} (torch {run['torch']}, minidiff {run['minidiff']}, quick mode "
                  f"{run['quick_mode']}) on {run['date']}: {run['seconds'] / 60:.1f} minutes.", ""]
        for k, (name, caption) in enumerate(run["figures"], 1):
            lines += [f":::{{figure}} {run['chapter']}/{name}", f":name: gallery-{run['chapter']}-{k}", "",
                      caption or f"Figure {k} of the chapter.", ":::", ""]
    page = out / "gallery.md"
    page.write_text("\n".join(lines))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", metavar="NN", help="chapter numbers (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "gallery", help="output folder")
    parser.add_argument("--quick", action="store_true", help="quick mode: a trial run, not the gallery")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default: %(default)s)")
    args = parser.parse_args(argv)

    import minidiff
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        chapters = [c for c in chapters if c.name[:2] in args.chapters]
        if not chapters:
            parser.error(f"--chapters {' '.join(args.chapters)}: no such chapter")
    runs = []
    for path in chapters:
        print(f"{path.name}: running ({'quick' if args.quick else 'full'} mode)...", flush=True)
        nb, seconds = run_chapter(path, quick=args.quick, timeout=args.timeout)
        ready = device_line(nb)
        folder = args.out / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for k, (png, caption) in enumerate(figures_of(nb), 1):
            (folder / f"fig-{k:02d}.png").write_bytes(png)
            names.append((f"fig-{k:02d}.png", caption))
        title = next((line.lstrip("# ").strip() for cell in nb.cells if cell.cell_type == "markdown"
                      for line in cell.source.splitlines() if line.startswith("# ")), path.stem)
        runs.append({"chapter": path.stem, "title": title, "seconds": round(seconds, 1), "figures": names,
                     "device": f"{ready.get('device', '?')} ({gpu})", "torch": ready.get("torch", "?"),
                     "quick_mode": ready.get("mode", "?"), "minidiff": minidiff.__version__,
                     "date": datetime.date.today().isoformat()})
        print(f"{path.name}: {seconds:.0f} s on {ready.get('device', '?')}, {len(names)} figures", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {write_page(args.out, runs)} and {args.out / 'runs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
