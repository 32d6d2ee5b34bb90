"""Finding infrared/visible image pairs in the folder layouts that fusion data sets use.

Every file gets a matching key made of its folder path (with modality folder names such as
lwir/visible blanked out) and its stem (with a modality prefix such as IR_/VIS stripped), so one
matcher covers KAIST trees, ir/vi folders and TNO-style IRn/VISn names alike.
"""
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataio.images import IMAGE_EXTENSIONS, is_image_file
from utils.errors import CrossFuseError

IR_ALIASES = ("infrared", "lwir", "ir")
VI_ALIASES = ("visible", "vis", "vi")
_IR_PREFIX = re.compile(r"^(?:infrared|lwir|ir)(?:[_\- ]+|(?=\d))(?P<rest>.+)$", re.IGNORECASE)
_VI_PREFIX = re.compile(r"^(?:visible|vis|vi)(?:[_\- ]+|(?=\d))(?P<rest>.+)$", re.IGNORECASE)
_LAYOUTS = (
    "ir/vi subfolders (ir|infrared|lwir and vi|vis|visible)",
    "KAIST setXX/VYYY/lwir + visible",
    "TNO-style IRn/VISn file names",
)


@dataclass(frozen=True)
class Pair:
    """One registered IR/VIS pair; `name` is a unique, filesystem-safe stem for its output file."""

    name: str
    ir: Path
    vi: Path


@dataclass
class PairScan:
    """Matched pairs sorted by name, plus the files that found no partner (reported, not fatal)."""

    pairs: list[Pair]
    unpaired: list[Path]


@dataclass(frozen=True)
class _Entry:
    path: Path
    dirs: tuple[str, ...]
    stem: str
    rest: str | None


def natural_key(text: str) -> list:
    """Sort key treating digit runs as numbers, so IR2 comes before IR10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "pair"


def _folder_images(folder: Path, what: str) -> list[Path]:
    if not folder.exists():
        raise CrossFuseError(f"{folder}: {what} folder does not exist")
    if not folder.is_dir():
        raise CrossFuseError(f"{folder}: {what} path is not a folder")
    files = [path for path in _walk(folder) if is_image_file(path)]
    if not files:
        suffixes = " ".join(sorted(IMAGE_EXTENSIONS))
        raise CrossFuseError(f"{folder}: {what} folder contains no images ({suffixes})")
    return sorted(files, key=lambda p: natural_key(str(p)))


def _walk(folder: Path) -> list[Path]:
    """Every file under folder, following symlinked folders (Path.rglob on Python 3.11 does not), each real
    folder once so a link back up cannot loop; dot-files and dot-folders are skipped."""
    seen = {os.path.realpath(folder)}
    files = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(top, name))
            if not name.startswith(".") and real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        files += [Path(top, name) for name in names if not name.startswith(".")]
    return files


def find_images(folder: Path) -> list[Path]:
    """All images under `folder` (recursively, dot-files skipped), in natural order."""
    return _folder_images(Path(folder), "image")


def _modality_of(relative: Path) -> str | None:
    """'ir' or 'vi' from the deepest modality folder name, else from a stem prefix."""
    for part in reversed([p.lower() for p in relative.parts[:-1]]):
        if part in IR_ALIASES:
            return "ir"
        if part in VI_ALIASES:
            return "vi"
    if _IR_PREFIX.match(relative.stem):
        return "ir"
    if _VI_PREFIX.match(relative.stem):
        return "vi"
    return None


def _entry(path: Path, root: Path, side: str) -> _Entry:
    relative = path.relative_to(root)
    aliases = IR_ALIASES if side == "ir" else VI_ALIASES
    dirs = tuple("*" if p.lower() in aliases else p for p in relative.parts[:-1])
    prefix = (_IR_PREFIX if side == "ir" else _VI_PREFIX).match(path.stem)
    return _Entry(path, dirs, path.stem, prefix.group("rest") if prefix else None)


def _match(ir: list[_Entry], vi: list[_Entry]) -> tuple[list[tuple[_Entry, _Entry, str]], list[Path]]:
    """Pair by same stem first, then by the stem left after stripping a modality prefix."""
    matched = []
    rules = (lambda e: e.stem, lambda e: e.rest if e.rest is not None else e.stem)
    for stem_of in rules:
        by_key = _unique_keys(vi, stem_of)
        left = []
        for key, entry in _unique_keys(ir, stem_of).items():
            partner = by_key.pop(key, None)
            if partner is None:
                left.append(entry)
            else:
                matched.append((entry, partner, stem_of(entry)))
        ir, vi = left, list(by_key.values())
    return matched, sorted([e.path for e in ir + vi], key=lambda p: natural_key(str(p)))


def _unique_keys(entries: list[_Entry], stem_of: Callable[[_Entry], str]) -> dict:
    """Entries by (folders, stem); two files of one side with one key (a.jpg, a.png) are refused."""
    by_key = {}
    for entry in entries:
        key = (tuple(d.lower() for d in entry.dirs), stem_of(entry).lower())
        if key in by_key:
            raise CrossFuseError(
                f"{entry.path}: same name as {by_key[key].path}, so its partner is ambiguous"
            )
        by_key[key] = entry
    return by_key


def _to_pairs(matched: list[tuple[_Entry, _Entry, str]]) -> list[Pair]:
    """Name each pair by its folders and stem ("set00_V000_I00000"), unique and filesystem-safe."""
    pairs, used = [], set()
    for ir, vi, stem in matched:
        base = _safe("_".join([*(d for d in ir.dirs if d != "*"), stem]))
        name, count = base, 1
        while name.lower() in used:
            count += 1
            name = f"{base}-{count}"
        used.add(name.lower())
        pairs.append(Pair(name, ir.path, vi.path))
    return sorted(pairs, key=lambda pair: natural_key(pair.name))


def named_side(path: Path) -> str | None:
    """'ir' or 'vi' where a path's own name, or its folder's for a file, names a modality; else None."""
    path = Path(path)
    for name in (path.stem, path.parent.name) if path.suffix.lower() in IMAGE_EXTENSIONS else (path.name,):
        if name.lower() in IR_ALIASES:
            return "ir"
        if name.lower() in VI_ALIASES:
            return "vi"
    return None


def refuse_swapped(ir: Path, vi: Path) -> None:
    """IR and VIS paths given the wrong way round (`--ir test/vi --vi test/ir`) fuse without a word, and
    the result is not what anyone asked for; refuse them while their names say so."""
    if named_side(ir) == "vi" and named_side(vi) == "ir":
        raise CrossFuseError(f"{ir} is named as a visible image or folder and {vi} as an infrared one: the IR and "
                             "VIS inputs look swapped; give them the other way round")


def find_pairs(ir: Path, vi: Path | None = None) -> PairScan:
    """The IR/VIS pairs of a data set root (vi omitted), or of an IR folder and a VIS folder.

    One function for both, so a data set given either way is matched by the same rules. A root may
    be in any supported layout (see _LAYOUTS). With two folders, ir == vi means one root holding both:
    each file's side comes from a modality folder in its path (KAIST lwir/visible) or a name prefix
    (IR1/VIS1); otherwise relative paths under the two folders must mirror.
    """
    if vi is None:
        return _find_in_root(Path(ir))
    ir, vi = Path(ir), Path(vi)
    refuse_swapped(ir, vi)
    ir_files = _folder_images(ir, "IR")
    if ir.resolve() == vi.resolve():
        sides = {path: _modality_of(path.relative_to(ir)) for path in ir_files}
        stray = [path for path, side in sides.items() if side is None]
        ir_entries = [_entry(p, ir, "ir") for p, side in sides.items() if side == "ir"]
        vi_entries = [_entry(p, vi, "vi") for p, side in sides.items() if side == "vi"]
    else:
        stray = []
        ir_entries = [_entry(p, ir, "ir") for p in ir_files]
        vi_entries = [_entry(p, vi, "vi") for p in _folder_images(vi, "VIS")]
    matched, unpaired = _match(ir_entries, vi_entries)
    if not matched:
        where = str(ir) if ir == vi else f"{ir} and {vi}"
        raise CrossFuseError(
            f"{where}: no IR/VIS pairs (nothing matches by name; {len(ir_entries)} IR and "
            f"{len(vi_entries)} VIS images found)"
        )
    unpaired = sorted(unpaired + stray, key=lambda p: natural_key(str(p)))
    return PairScan(_to_pairs(matched), unpaired)


def _alias_subfolder(root: Path, aliases: tuple[str, ...]) -> Path | None:
    for alias in aliases:
        for child in sorted(root.iterdir()):
            if child.is_dir() and child.name.lower() == alias:
                return child
    return None


def _find_in_root(root: Path) -> PairScan:
    files = _folder_images(root, "data set")
    ir_dir, vi_dir = _alias_subfolder(root, IR_ALIASES), _alias_subfolder(root, VI_ALIASES)
    if ir_dir is not None and vi_dir is not None:
        return find_pairs(ir_dir, vi_dir)
    if any(_modality_of(path.relative_to(root)) for path in files):
        return find_pairs(root, root)
    raise CrossFuseError(f"{root}: no recognisable layout (looked for {'; '.join(_LAYOUTS)})")


def split_span(text: str) -> tuple[str, slice]:
    """FOLDER[START:END] -> (FOLDER, slice of its pairs in order); a plain FOLDER takes them all. One syntax for
    training data and test sets, e.g. roadscene[:200] to train on and roadscene[200:] to test on."""
    if match := re.fullmatch(r"(.+)\[(\d*):(\d*)\]", text):
        return match[1], slice(int(match[2]) if match[2] else None, int(match[3]) if match[3] else None)
    return text, slice(None)


def span_text(span: slice) -> str:
    """The [START:END] suffix that split_span reads, empty for all pairs."""
    return "" if span == slice(None) else f"[{span.start if span.start is not None else ''}:" \
                                            f"{span.stop if span.stop is not None else ''}]"


def take_span(pairs: list[Pair], span: slice, source: str) -> list[Pair]:
    """pairs[span], or a one-line error naming source and the slice when it holds none (training data and
    test sets alike)."""
    if chosen := pairs[span]:
        return chosen
    raise CrossFuseError(f"{source}{span_text(span)}: no IR/VIS pairs found"
                         + (f" (the folder holds {len(pairs)})" if pairs else ""))


def pair_single(ir_file: Path, vi_file: Path) -> Pair:
    """A Pair for fusing one IR file with one VIS file given directly."""
    ir_file, vi_file = Path(ir_file), Path(vi_file)
    refuse_swapped(ir_file, vi_file)
    for path, what in ((ir_file, "IR"), (vi_file, "VIS")):
        if not path.is_file():
            raise CrossFuseError(f"{path}: {what} image does not exist or is not a file")
    prefix = _IR_PREFIX.match(ir_file.stem)
    return Pair(_safe(prefix.group("rest") if prefix else ir_file.stem), ir_file, vi_file)
