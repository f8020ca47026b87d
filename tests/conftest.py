"""``pytest --device cuda``: the device-parametrized tests (those taking the ``device`` fixture)
run on that device; the default is the CPU. benchmarks/gpu_check.py runs them on a GPU."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device of the device-parametrized tests: cpu, cuda or cuda:N")


def pytest_configure(config):
    if config.getoption("--device").startswith("cuda"):  # bitwise resume checks need deterministic kernels,
        torch.backends.cudnn.allow_tf32 = False                # comparisons across layouts full fp32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture
def device(request) -> str:
    return request.config.getoption("--device")
