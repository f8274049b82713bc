"""Test-wide settings.

One torch thread: the suite's models are tiny, and on a small shared machine OpenMP spin-waiting
with several threads made tiny forwards tens of times slower than a single thread.
"""

import pytest

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # maskcodec's tests run without torch
    torch = None


@pytest.fixture(autouse=True)
def _skip_gpu_tests_without_gpu(request):
    if request.node.get_closest_marker("gpu"):
        from maskcodec.backend import cuda_status

        available, why = cuda_status()
        if not available:
            pytest.skip(why)
