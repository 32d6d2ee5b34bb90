"""Fuse infrared and visible images with a CrossFuse model.

    python fuse.py --ir IR.png --vi VIS.png --out fused.png --reference models/reference
    python fuse.py --ir data/tno/ir --vi data/tno/vi --out out/tno --model models/end_to_end

Weights: the paper's released files (--reference DIR), a run of this suite (--model FILE_OR_DIR,
optionally --epoch N), or explicit --fusion/--ir-encoder/--vi-encoder files of either kind.
A colour visible image is fused through its luma and written in colour (Cb, Cr from the visible
image) unless --gray. Output: 8-bit, the IR image's size; a VIS image of another size (a registered
pair captured at two resolutions, as RoadScene's) is resized to it, as training reads such pairs, and
a note says how many were (--same-size refuses them instead). For one pair --out names the file and
its format (.png, .jpg/.jpeg at quality 95, .bmp, .tif/.tiff), for folders PNG files. A 16-bit or float
IR image is stretched over its 0.1-99.9 percentiles, or over --ir-range (docs/images.md has every image
kind). Exit code 2 when any pair could not be fused (each is named on its own error line), as for every
problem to fix.
"""
import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from cli.entry import run_main
from dataio.images import WRITE_FORMATS, parse_range, read_size
from dataio.pairs import Pair, find_pairs, pair_single
from formats.checkpoint import find_reference, find_trained, load_crossfuse
from inference.files import fuse_pair
from net.model import CrossFuse
from utils.atomic import check_writable
from utils.device import amp_note, pick_device
from utils.errors import CrossFuseError


def load_model(args: argparse.Namespace) -> CrossFuse:
    """The model named by exactly one of --reference, --model, or --fusion (+ encoders)."""
    chosen = [name for name in ("reference", "model", "fusion") if getattr(args, name)]
    if len(chosen) != 1:
        raise CrossFuseError("give exactly one of --reference DIR, --model PATH or --fusion FILE")
    swap = args.allow_other_modality
    if args.reference:
        ir, vi, fusion = find_reference(args.reference)
        return load_crossfuse(fusion, ir, vi, swap)
    if args.model:
        return load_crossfuse(find_trained(args.model, args.epoch), args.ir_encoder, args.vi_encoder, swap)
    return load_crossfuse(args.fusion, args.ir_encoder, args.vi_encoder, swap)


def plan(ir: Path, vi: Path, out: Path) -> tuple[list[tuple[Pair, Path]], list[Path]]:
    """(pair, output path) for a single pair of files or for every pair of two folders; also the unpaired."""
    if ir.is_file() or vi.is_file():
        pair = pair_single(ir, vi)
        if out.is_dir() or not out.suffix:
            return [(pair, out / f"{pair.name}.png")], []
        if out.suffix.lower() not in WRITE_FORMATS:
            raise CrossFuseError(f"{out}: cannot write {out.suffix} images "
                                 f"(use {', '.join(sorted(WRITE_FORMATS))}, or a folder)")
        return [(pair, out)], []
    scan = find_pairs(ir, vi)
    return [(p, out / f"{p.name}.png") for p in scan.pairs], scan.unpaired


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ir", type=Path, required=True, help="infrared image or folder")
    parser.add_argument("--vi", type=Path, required=True, help="visible image or folder")
    parser.add_argument("--out", type=Path, required=True, help="output PNG (one pair) or folder")
    parser.add_argument("--reference", type=Path, help="folder with the reference's *_ir/*_vi/fusetrans*.model")
    parser.add_argument("--model", type=Path, help="a fusion .model of this suite, or its training output folder")
    parser.add_argument("--epoch", type=int, help="with --model DIR: this epoch instead of the latest")
    parser.add_argument("--fusion", type=Path, help="fusion checkpoint (reference or suite)")
    parser.add_argument("--ir-encoder", type=Path, help="IR encoder/autoencoder checkpoint")
    parser.add_argument("--vi-encoder", type=Path, help="VIS encoder/autoencoder checkpoint")
    parser.add_argument("--gray", action="store_true", help="write the fused luma only")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast on CUDA and on CPUs with native bf16 (about 2x faster on those CPUs)")
    parser.add_argument("--allow-other-modality", action="store_true",
                        help="accept an encoder file recorded for the other modality (swapped on purpose)")
    parser.add_argument("--ir-range", default="", metavar="LOW,HIGH",
                        help="map a 16-bit/float IR image's LOW..HIGH to 0..255 (a camera's fixed range) instead of "
                        "stretching each image over its own 0.1-99.9 percentiles")
    parser.add_argument("--same-size", action="store_true",
                        help="refuse a pair whose images differ in size instead of resizing the VIS image")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    ir_range = parse_range(args.ir_range)
    jobs, unpaired = plan(args.ir, args.vi, args.out)
    for folder in sorted({target.parent for _, target in jobs}):
        check_writable(folder)
    model = load_model(args).to(device)
    if note := amp_note(device, args.amp):
        print(note, file=sys.stderr)
    for path in unpaired:
        print(f"warning: no partner for {path}", file=sys.stderr)
    resized = sum(differ_in_size(pair) for pair, _ in jobs) if not args.same_size else 0
    if resized:
        print(f"note: {resized} of {len(jobs)} pairs differ in size; their VIS images are resized to the IR images' "
              "size, as training reads such pairs (--same-size refuses them)", file=sys.stderr)
    failures = []
    for pair, target in tqdm(jobs, desc="fusing", unit="pair", disable=len(jobs) < 2):
        try:
            fuse_pair(model, pair, target, device, args.amp, args.gray, args.same_size, ir_range)
        except CrossFuseError as e:
            failures.append(str(e))
            tqdm.write(f"error: {e}", file=sys.stderr)
    print(f"fused {len(jobs) - len(failures)} of {len(jobs)} pairs into {args.out}"
          + (f"; {len(unpaired)} unpaired files listed above" if unpaired else ""))
    return 2 if failures else 0


def differ_in_size(pair: Pair) -> bool:
    """From the headers only; an unreadable file is left to fusing, which names it."""
    try:
        return read_size(pair.ir) != read_size(pair.vi)
    except CrossFuseError:
        return False


if __name__ == "__main__":
    sys.exit(run_main(main))
