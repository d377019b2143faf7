import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before numba/torch start their thread pools

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
