"""Plain text for people: the one column aligner behind bench.py, evaluate.py and the comparison, and
the one way numbers and durations are written in their tables and reports."""
from collections.abc import Iterable, Sequence


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """Columns as wide as their widest cell, two spaces apart, trailing blanks stripped.

    `align` has one character per column, "<" (left) or ">" (right); columns it leaves out are left-aligned.
    """
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    sides = align.ljust(len(widths), "<")
    return "\n".join("  ".join(cell.rjust(width) if side == ">" else cell.ljust(width)
                               for cell, width, side in zip(row, widths, sides, strict=True)).rstrip()
                     for row in table)


def number(value: float | None, digits: int = 4, sign: bool = False) -> str:
    """A value with `digits` significant digits (trailing zeros kept, so columns compare); n/a for a
    missing or undefined value, inf as inf."""
    if value is None or value != value:
        return "n/a"
    if value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:{'+' if sign else ''}#.{digits}g}"


def duration(seconds: float) -> str:
    """Seconds as s, min or h, whichever reads best."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
