import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before numba/torch start their thread pools
# the tests check the steady state: numba's parallel kernels (so that 1- vs 2-thread tests mean something),
# whether or not a first run's background compile has finished; tests/test_kernel_modes.py runs both modes
os.environ.setdefault("AIMC_KERNELS", "parallel")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
