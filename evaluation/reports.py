"""The report writers evaluate.py and the comparison share: Markdown, LaTeX (booktabs) and CSV tables
from rows of text cells, JSON-ready copies of results, and atomic text files."""
import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from utils.atomic import atomic_write


def json_ready(value: Any) -> Any:
    """A copy that JSON can hold: numpy arrays and scalars as Python values, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda temp: temp.write_text(text))


def markdown_table(rows: list[list[str]]) -> str:
    """The first row is the header."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"\\": "\\textbackslash{}", "~": "\\textasciitilde{}",
                                                   "^": "\\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_table(rows: list[list[str]], align: str, caption: str = "", label: str = "", comment: str = "") -> str:
    """A booktabs tabular of LaTeX cells (the first row is the header), in a table float with a caption
    when one is given; `comment` becomes a % line above it."""
    body = ["\\begin{tabular}{" + align + "}", "\\toprule", " & ".join(rows[0]) + " \\\\", "\\midrule",
            *(" & ".join(row) + " \\\\" for row in rows[1:]), "\\bottomrule", "\\end{tabular}"]
    if caption:
        body = ["\\begin{table}", "\\centering", f"\\caption{{{latex_escape(caption)}}}",
                *([f"\\label{{{label}}}"] if label else []), *body, "\\end{table}"]
    return "\n".join([*([f"% {comment}"] if comment else []), *body]) + "\n"


def csv_text(rows: list[list[Any]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(row)
    return out.getvalue()
