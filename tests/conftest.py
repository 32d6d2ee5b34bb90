"""Shared test fixtures: paths to ../shared and a fixed thread count for reproducible numbers."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
DATA = SHARED / "data"

torch.set_num_threads(2)
os.environ.setdefault("OMP_NUM_THREADS", "2")  # the training scripts run here keep it (utils.cores.pick_threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real RoadScene/TNO pairs, or a skip saying why they are missing."""
    if not (DATA / "tno" / "ir").is_dir():
        pytest.skip(f"real image pairs not found at {DATA} (the ../shared folder beside the project)")
    return DATA


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference weights builder and vectors, or a skip saying why they are missing."""
    if not (REFERENCE / "crossfuse_vectors.pt").is_file():
        pytest.skip(f"reference vectors not found at {REFERENCE} (the ../shared folder beside the project)")
    return REFERENCE
