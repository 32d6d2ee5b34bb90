"""Image-fusion metrics on their own: the suite's definitions (core), the toolbox profiles that
reproduce VIFB, Tang, RFN-Nest and CDDFuse number for number (profiles), and their helpers. It imports
numpy, scipy, torch and itself only, so a fused image can be scored without the training stack.

    >>> import numpy as np
    >>> from metrics import score_fusion
    >>> rng = np.random.default_rng(0)
    >>> ir, vis = rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
    >>> fused = ((ir.astype(float) + vis) / 2).round().astype(np.uint8)
    >>> scores = score_fusion(fused, ir, vis, profile="tang", metrics=["EN", "SSIM"])
    >>> sorted(scores)
    ['EN', 'SSIM']
"""
from collections.abc import Iterable

import numpy as np

from metrics.core import MetricError
from metrics.profiles import PROFILES, get_profile, score

__all__ = ["PROFILES", "MetricError", "score_fusion"]


def score_fusion(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray, profile: str = "suite",
                 metrics: Iterable[str] | None = None) -> dict[str, float]:
    """The named profile's metrics (all of them by default) for a fused image and its two sources:
    2-D arrays of equal size holding 0..255 values, read as the profile's toolbox reads them
    (dataio.toolbox_readers.read_as reads files so). Raises MetricError for bad sizes or names."""
    return score(get_profile(profile), fused, infrared, visible, None if metrics is None else list(metrics))
