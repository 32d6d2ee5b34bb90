"""A row of the GPU check's verdict, and the guard every check runs behind: an exception becomes a FAILED
row with the first line of the error, so one broken check never stops the others."""
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    name: str
    passed: bool
    figure: str  # the measurement the verdict rests on, or why it failed
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What a group of checks is given: the RoadScene folder, a folder of its own, its time limit."""

    data: Path
    work: Path
    seconds: float


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


EXCEPTION = re.compile(r"^[\w.]*(Error|Exception)\b")


def error_line(stderr: str, fallback: str) -> str:
    """The line of a failed command's error output that says what went wrong: the suite's one-line
    `error:`, else the first exception line of a traceback (not torchrun's summary of its worker's)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line
    for line in lines:
        if EXCEPTION.match(line) and "ChildFailedError" not in line:
            return line
    return lines[-1] if lines else fallback


def guarded(name: str, check: Callable[[], tuple[bool, str]]) -> Row:
    """check() -> (passed, figure) as a Row, timed; whatever it raises, a FAILED row."""
    start = time.perf_counter()
    try:
        passed, figure = check()
    except Exception as e:  # the guard: any failure is this row's verdict
        passed, figure = False, first_line(e)
    return Row(name, passed, figure, time.perf_counter() - start)


def relative_difference(values: list[float], reference: list[float]) -> float:
    """The largest |value - reference| / |reference| (inf for a length mismatch or a non-finite value)."""
    if len(values) != len(reference) or not values:
        return float("inf")
    diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(values, reference, strict=True)]
    return max(diffs) if all(d == d for d in diffs) else float("inf")
