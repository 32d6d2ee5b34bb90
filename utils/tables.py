"""Plain-text tables for the terminal: the one column aligner behind bench.py, evaluate.py and
compare_training_approaches.py, so their tables line up by the same rules."""
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
