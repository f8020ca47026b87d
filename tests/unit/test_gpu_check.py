"""benchmarks/gpu_check.py: a CPU dry run of some sections passes, and it never writes the GPU
report from a run without CUDA unless asked (CPU numbers must not pass for GPU numbers)."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_quick_run_passes_and_writes_only_when_asked(tmp_path, capsys):
    gpu_check = load()
    doc = tmp_path / "gpu.md"
    flags = ["--device", "cpu", "--quick", "--doc", str(doc)]
    assert gpu_check.main(flags + ["--sections", "robustness,semi"]) == 0
    out, err = capsys.readouterr()
    assert not doc.exists() and "does not write" in err
    assert "**A CPU run: these are not GPU numbers.**" in out and "result: every section passed" in out
    assert "refused as it must be here: 2:4 semi-structured sparsity needs a CUDA GPU" in out
    assert gpu_check.main(flags + ["--sections", "semi", "--allow-cpu"]) == 0
    assert doc.read_text().startswith("# The GPU check\n\n**A CPU run: these are not GPU numbers.**")


def test_two_four_mask_keeps_the_two_largest_of_every_group():
    import torch

    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -1.0, 0.2]])
    expected = torch.tensor([[False, True, True, False, True, False, True, False]])
    assert torch.equal(load().two_four_mask(weight), expected)
