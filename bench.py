"""Speed of CrossFuse on this machine: matmul ceiling, fusion latency, training steps, data pipeline.

Every model measurement has a peak memory of its own: on the CPU it runs in a fresh process (RSS), on
CUDA in this one after resetting the allocator's peak (torch.cuda.max_memory_allocated), which saves
seconds of CUDA start-up per row. In each, the first run counts FLOPs (torch.utils.flop_counter) and
doubles as the warm-up; the timed runs that follow are reported by their median. On CUDA the fusion and
training sections run as fp32, bf16 autocast (amp) and torch.compile variants.

    python bench.py                      # everything, defaults (under 10 minutes on 2 CPU cores)
    python bench.py --quick --json o.json  # tiny sizes, one repeat (what the tests run)
    python bench.py --data DIR           # RoadScene for the data section (default ../shared/data/roadscene)
    python bench.py --sections fusion --fusion-sizes 1024x1024,2048x2048   # 1 and 4 MP only
    python bench.py --plan [--batch=8 --image_size=256 ...]   # a GPU plan: memory, FLOPs, hours per GPU
    python bench.py --sections versus --reference-code ../CrossFuse   # the authors' steps beside ours

The training rows time the trainer's own step (training.trainer.train_step with its optimiser, loss
functions and the settings of the args files), so an AMP row measures the step training runs.
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_plan import format_plan, plan
from benchmarks.sections import (
    measure_ceiling,
    measure_data,
    measure_fusion,
    measure_load,
    measure_profile,
    measure_training,
)
from benchmarks.timing import BenchSettings, in_fresh_process, isolated
from benchmarks.versus import check_checkout, measure_versus
from cli.entry import run_main
from utils.atomic import atomic_write
from utils.device import native_bf16, pick_device
from utils.errors import CrossFuseError
from utils.tables import format_table

ROADSCENE = Path("../shared/data/roadscene")  # --data's default, relative to the working directory
SECTIONS = ("ceiling", "fusion", "train", "profile", "load", "data", "versus")
VARIANTS = ("fp32", "amp", "compile")
STAGES = ("stage1", "stage2", "end_to_end")
FUSION_SIZES = ((512, 512), (1024, 1024), (2048, 2048), (576, 768))
QUICK_FUSION_SIZES = ((64, 64), (96, 128))


# ---------------------------------------------------------------- driver


def default_variants(device: torch.device) -> list[str]:
    """All three on CUDA; on the CPU fp32, and bf16 autocast where the CPU has it natively (compiling is not
    what is measured there)."""
    if device.type == "cuda":
        return list(VARIANTS)
    return ["fp32", "amp"] if native_bf16(device) else ["fp32"]


def run(settings: BenchSettings, sections: list[str], variants: list[str], data: Path = ROADSCENE,
        log: Callable[[str], None] = print, fusion_sizes: list[tuple[int, int]] | None = None,
        reference_code: Path | None = None) -> dict:
    """Every requested measurement, each isolated (benchmarks.timing.isolated; `data`: the RoadScene
    folder, `fusion_sizes`: (height, width) pairs, `reference_code`: the authors' checkout for the
    side-by-side steps); returns the JSON-ready results."""
    device = torch.device(settings.device)
    results: dict[str, Any] = {"meta": {**asdict(settings), "torch": torch.__version__, "sections": sections,
                                        "variants": variants, "device_name": device_name(device)}}
    if "ceiling" in sections:
        log("matmul ceiling ...")
        results["ceiling"] = isolated(measure_ceiling, settings)
    if "fusion" in sections:
        results["fusion"] = []
        for variant in variants:
            for height, width in fusion_sizes or (QUICK_FUSION_SIZES if settings.quick else FUSION_SIZES):
                log(f"fusion {width}x{height} {variant} ...")
                results["fusion"].append(isolated(measure_fusion, settings, height, width, variant))

    def each_stage(what: str, runner: Callable, measure: Callable, *more: Any) -> list[dict]:
        """measure(settings, stage, variant, *more) for every variant and stage, each by `runner`."""
        rows = []
        for variant in variants:
            for stage in STAGES:
                log(f"{what} {stage} {variant} ...")
                rows.append(runner(measure, settings, stage, variant, *more))
        return rows

    if "train" in sections:
        results["train"] = each_stage("training", isolated, measure_training)
    if "profile" in sections and device.type == "cpu":
        results["profile"] = each_stage("profiling", in_fresh_process, measure_profile)
    if "load" in sections and device.type == "cpu":
        log("training step under load ...")
        results["load"] = in_fresh_process(measure_load, settings)
    if "data" in sections:
        log("data pipeline ...")
        results["data"] = in_fresh_process(measure_data, settings, data)
    if "versus" in sections and device.type == "cpu":
        results["versus"] = each_stage("reference beside ours,", in_fresh_process, measure_versus, reference_code)
    add_fractions(results)
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({multiprocessing.cpu_count()} cores)"


def add_fractions(results: dict) -> None:
    """Achieved GFLOP/s as a fraction of the matmul ceiling of the same precision (bf16 for amp): on
    the CPU the fp32 one timed beside the measurement (for amp times the ceiling section's bf16/fp32
    ratio), on CUDA the ceiling section's."""
    ceiling = results.get("ceiling", {})
    for row in results.get("fusion", []) + results.get("train", []):
        low = row["variant"] == "amp" and "bf16" in ceiling
        ref = ceiling.get("bf16" if low else "fp32")
        rate = row.get("ceiling_beside_gflops") or (ref["gflops_per_s"] if ref else None)
        if low and rate and "ceiling_beside_gflops" in row:
            rate *= ceiling["bf16"]["gflops_per_s"] / ceiling["fp32"]["gflops_per_s"]
        row["fraction_of_ceiling"] = row["gflops_per_s"] / rate if rate else None


def table(results: dict) -> str:
    """The human-readable summary printed at the end."""
    meta = results["meta"]
    lines = [f"CrossFuse benchmark: {meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}"
             f"{', quick' if meta['quick'] else ''}; medians of {meta['repeats']} runs after a warm-up"]
    if "load_average" in meta:
        loads = " -> ".join(f"{load[0]:.1f}" for load in meta["load_average"].values())
        lines.append(f"load average (1 min) {loads}; {meta['total_seconds']:.0f} s in all")

    def pct(row: dict) -> str:
        return "-" if row.get("fraction_of_ceiling") is None else f"{100 * row['fraction_of_ceiling']:.0f}%"

    def mib(row: dict) -> list[str]:
        """Peak, and its growth over the process before the first run (libraries, weights, inputs)."""
        growth = (row["peak_mem_bytes"] - row["rss_before_bytes"]) / 2**20 if row["mem_kind"] == "rss" else None
        return [f"{row['peak_mem_bytes'] / 2**20:,.0f}", f"{growth:,.0f}" if growth is not None else "-"]

    def rates(row: dict) -> list[str]:
        return [f"{row['flops'] / 1e9:.0f}", f"{row['gflops_per_s']:.1f}", pct(row), *mib(row)]

    for name, c in results.get("ceiling", {}).items():
        lines.append(f"\nceiling  {name} matmul {c['n']}^2: {c['gflops_per_s']:.1f} GFLOP/s")
    beside = [r["ceiling_beside_gflops"] for r in results.get("fusion", []) + results.get("train", [])
              if "ceiling_beside_gflops" in r]
    if beside:
        lines.append(f"ceil = share of the fp32 matmul rate timed in each measuring process right after it "
                     f"({min(beside):.1f} to {max(beside):.1f} GFLOP/s here: the load varies; amp rows: times "
                     "the bf16/fp32 ratio of the ceiling)")
    costs = ["GFLOP", "GFLOP/s", "ceil", "peak MiB", "+MiB"]
    if results.get("fusion"):
        lines += ["", format_table(
            ["fusion (1 pair)", "variant", "size", "s", "s/MP", *costs],
            [["", r["variant"], f"{r['width']}x{r['height']}", f"{r['seconds']:.2f}", f"{r['seconds_per_mp']:.2f}",
              *rates(r)] for r in results["fusion"]], "<<" + ">" * 8)]
    if results.get("train"):
        lines += ["", format_table(
            ["training step", "variant", "stage", "batch", "s/step", *costs],
            [["", r["variant"], r["stage"], str(r["batch"]), f"{r['seconds']:.2f}", *rates(r)]
             for r in results["train"]], "<<<" + ">" * 7)]
    if results.get("profile"):
        kinds = list(results["profile"][0]["shares"])
        lines += ["", format_table(
            ["where a step's time goes", "variant", "stage", "op s/step", *kinds],
            [["", r["variant"], r["stage"], f"{r['operator_seconds']:.2f}",
              *(f"{100 * r['shares'][k]:.0f}%" for k in kinds)] for r in results["profile"]],
            "<<<" + ">" * (1 + len(kinds)))]
    if results.get("versus"):
        lines += ["", format_table(
            ["beside the reference", "ours", "stage", "batch", "reference s/step", "ours s/step", "speed-up"],
            [["", r["variant"], r["stage"], str(r["batch"]),
              f"{r['reference_median_s']:.2f} ({min(r['reference_s']):.2f}-{max(r['reference_s']):.2f})",
              f"{r['ours_median_s']:.2f} ({min(r['ours_s']):.2f}-{max(r['ours_s']):.2f})", f"{r['speedup']:.2f}x"]
             for r in results["versus"]], "<<<" + ">" * 4)]
    load = results.get("load")
    if load is not None and "skipped" in load:
        lines.append(f"\nunder load       skipped: {load['skipped']}")
    elif load is not None:
        alone = load["alone_seconds"]
        lines.append(f"\nunder load       end_to_end step, batch {load['batch']} at {load['size']} px: "
                     f"alone {alone:.2f} s")
        lines.append(f"{'':17}beside one busy process: {load['threads']} threads {load['crowded_seconds']:.2f} s "
                     f"({load['crowded_seconds'] / alone:.1f}x), {load['picked_threads']} picked "
                     f"{load['picked_seconds']:.2f} s ({load['picked_seconds'] / alone:.1f}x); "
                     f"fair <= {load['allowed_slowdown']:.1f}x")
    data = results.get("data")
    if data is not None:
        if "skipped" in data:
            lines.append(f"\ndata pipeline    skipped: {data['skipped']}")
        else:
            lines.append(f"\ndata pipeline    {data['pairs']} RoadScene pairs at 256 px, batches of {data['batch']}; "
                         f"cache built in {data['cache_build_seconds']:.1f} s")
            for r in data["rows"]:
                lines.append(f"{'':17}{r['source']:<6} {r['workers']} workers {r['pairs_per_s']:>8.1f} pairs/s"
                             f"  (first batch after {r['first_batch_seconds']:.2f} s)")
    return "\n".join(lines)


def check_finite(results: dict) -> None:
    """A NaN or a non-positive time means a broken measurement, not a fast one."""
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, float) and not math.isfinite(value):
            raise RuntimeError("a measurement came out non-finite")
    walk(results)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """bench.py's options, and the --key=value settings left over for --plan."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and one repeat (smoke test)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement after the warm-up (default 3, quick 1)")
    p.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; versus only "
                                      "with --reference-code)")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)} "
                                      "(default: all on CUDA, fp32 on the CPU)")
    p.add_argument("--fusion-sizes", help=f"comma-separated WIDTHxHEIGHT of the fusion section (default "
                                          f"{shown(FUSION_SIZES)}; quick {shown(QUICK_FUSION_SIZES)})")
    p.add_argument("--data", type=Path, default=ROADSCENE,
                   help="RoadScene folder (ir/, vi/) for the data section; skipped when absent (default %(default)s)")
    p.add_argument("--reference-code", type=Path, help="a checkout of the authors' code (github.com/hli1221/CrossFuse, "
                   "with timm installed): the versus section times its steps beside ours, alternating")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default %(default)s)")
    p.add_argument("--plan", action="store_true",
                   help="instead of timing: per stage the memory and FLOPs of a training step at the args files' batch "
                        "and image size (any --key=value of an args file applies), and for named GPUs whether it "
                        "fits and how long the schedule takes (seconds, no GPU needed)")
    return p.parse_known_args(argv)


def split_choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in allowed]
    if unknown or not chosen:
        raise CrossFuseError(f"--{what} {text!r}: choose from {','.join(allowed)}")
    return chosen


def shown(sizes: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{width}x{height}" for height, width in sizes)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'1024x1024,2048x2048' (width x height, as the table prints them) as (height, width) pairs."""
    try:
        sizes = [tuple(int(n) for n in size.lower().split("x")) for size in text.split(",") if size.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(size) != 2 or min(size) < 1 for size in sizes):
        raise CrossFuseError(f"--fusion-sizes {text!r}: comma-separated WIDTHxHEIGHT, e.g. 1024x1024,2048x2048")
    return [(height, width) for width, height in sizes]


def main(argv: list[str] | None = None) -> int:
    args, settings_argv = parse_args(argv)
    if args.plan:
        rows = plan(settings_argv)
        print(format_plan(rows))
        if args.json:
            atomic_write(args.json, lambda temp: temp.write_text(json.dumps({"plan": rows}, indent=1)))
        return 0
    if settings_argv:
        raise CrossFuseError(f"{' '.join(settings_argv)}: not a bench.py option (args-file settings go with --plan)")
    device = pick_device(args.device)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1 or args.threads < 1:
        raise CrossFuseError("--repeats and --threads must be at least 1")
    settings = BenchSettings(str(device), args.threads, repeats, args.quick)
    sections = (split_choices(args.sections, SECTIONS, "sections") if args.sections
                else [s for s in SECTIONS if s != "versus" or args.reference_code is not None])
    variants = split_choices(args.variants, VARIANTS, "variants") if args.variants else default_variants(device)
    start, load_start = time.perf_counter(), os.getloadavg()
    sizes = parse_sizes(args.fusion_sizes) if args.fusion_sizes else None
    if "versus" in sections and args.reference_code is None:
        raise CrossFuseError("--sections versus needs --reference-code DIR (a checkout of "
                             "github.com/hli1221/CrossFuse)")
    if args.reference_code is not None:
        check_checkout(args.reference_code)
    results = run(settings, sections, variants, args.data, lambda text: print(text, file=sys.stderr, flush=True), sizes,
                  args.reference_code)
    results["meta"]["total_seconds"] = time.perf_counter() - start
    results["meta"]["load_average"] = {"start": load_start, "end": os.getloadavg()}  # other work skews times
    check_finite(results)
    print(table(results))
    if args.json:
        atomic_write(args.json, lambda temp: temp.write_text(json.dumps(results, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
