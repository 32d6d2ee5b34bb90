"""Shared test fixtures: paths to ../shared and a fixed thread count for reproducible numbers."""
import os
from pathlib import Path

import pytest
import torch

from dataio.demo_data import make_demo_dataset

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


@pytest.fixture
def one_thread():
    """One torch thread for a test: tiny models gain nothing from more, and spinning threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_pairs(tmp_path_factory) -> Path:
    """Six training and two test pairs of 32 x 32 synthetic images (data/demo's layout)."""
    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_train=6, n_test=2, size=32)
