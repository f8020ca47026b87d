"""Distributed data parallel: 2 gloo ranks on the CPU, launched by torchrun.

One launch of ddp_worker.py checks several guarantees at once (the suite's time budget); the
one-process runs they are compared with are trained here, in this process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402
from image_tree import write_image_tree  # noqa: E402

from sparsetrain.engine import TrainConfig, Trainer  # noqa: E402
from sparsetrain.errors import UserError  # noqa: E402


_ONE_PROCESS: dict[str, dict] = {}


def one_process(method: str) -> dict:
    """ddp_worker.run(method) in this process (once per method)."""
    if method not in _ONE_PROCESS:
        _ONE_PROCESS[method] = ddp_worker.run(method)
    return _ONE_PROCESS[method]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (a free port; one thread a rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    write_image_tree(folder / "tree")
    done = torchrun(str(HERE / "ddp_worker.py"), str(folder))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("method", list(ddp_worker.METHODS))
def test_two_ranks_follow_one_process_with_twice_the_batch(ranks, method):
    """The global batch of 21 split over 2 ranks (10 + 11, and 5 + 6 in the last batch of each
    epoch) trains as one process with batch 21: the same masks after 50 steps, the same loss
    at every step (float rounding apart), the same test accuracy."""
    _, results = ranks
    one = one_process(method)
    assert len(one["losses"]) == 50
    for result in results:
        run = result["runs"][method]
        assert run["masks"].keys() == one["masks"].keys()
        for name, mask in one["masks"].items():
            assert torch.equal(run["masks"][name], mask), name
        assert run["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
        assert run["test_acc"] == one["test_acc"]


@pytest.mark.parametrize("method", ["rigl", "granet"])
def test_growth_reads_the_averaged_dense_gradient(ranks, method):
    """At the first update step the gradient the method grows by is, on both ranks, the gradient
    of the whole batch (what one process sees), inactive positions included: DDP averaged it in
    backward, before the method masked it."""
    _, results = ranks
    one = one_process(method)["grad"]
    assert int((one != 0).sum()) > 0.5 * one.numel()  # dense: far more than the 30% active weights
    for result in results:
        assert torch.allclose(result["runs"][method]["grad"], one, rtol=1e-5, atol=1e-7)


def test_diverged_masks_stop_every_rank(ranks):
    _, results = ranks
    for result in results:
        assert result["mismatch"] == ("the masks of the 2 ranks differ after step 3 of epoch 1: they changed on "
                                      "rank(s) 1 but not on rank(s) 0; the run stops rather than train on "
                                      "diverged masks")


def test_resume_is_exact_under_the_same_number_of_processes(ranks):
    """RigL with dropout (each rank its own RNG) stopped after epoch 2 and resumed ends with the
    weights and history of the run that was not stopped; rank 1 never wrote a checkpoint, and
    the 2-rank checkpoint does not resume in one process."""
    folder, results = ranks
    for result in results:
        for name, value in result["straight"].items():
            assert torch.equal(value, result["resumed"][name]), name
        assert result["straight_history"] == result["resumed_history"]
    for name, value in results[0]["straight"].items():  # the ranks hold one model
        assert torch.equal(value, results[1]["straight"][name])
    assert results[1]["saves"] == []
    trainer = Trainer(ddp_worker.toy_model(0.3), ddp_worker.toy_data(),
                      TrainConfig(epochs=3, batch_size=21, device="cpu"), method="rigl", seed=1,
                      checkpoint_path=folder / "resumed.pt")
    with pytest.raises(UserError, match=r"written by a run on 2 process\(es\), this one has 1: resume it "
                                        "with torchrun --nproc-per-node 2"):
        trainer.fit(resume=True)


def test_methods_unwrap_ddp_and_refuse_the_sparse_backend(ranks):
    _, results = ranks
    for result in results:
        assert result["world"] == 2
        assert result["wrapped_names"] == ["0.weight", "3.weight"]  # no "module." prefix
        assert result["sparse"].startswith("backend 'sparse' cannot train under DistributedDataParallel")


def test_streamed_images_each_rank_decodes_only_its_part(ranks):
    """imagenet_folder under 2 ranks: each rank decodes only its half of every batch (5 of 10,
    4 of the last 8), together every image once an epoch, and the run follows one process;
    evaluation is split too (test batches 10 + 2: 5 + 1 images a rank), its sums all-reduced."""
    folder, results = ranks
    one = ddp_worker.streamed_run(folder / "tree")
    assert len(one["losses"]) == 10 and len(one["decoded"]) == 96 + 2 * 12
    for epoch in range(2):
        mine = [[i for e, i in result["streamed"]["decoded"] if e == epoch] for result in results]
        assert [len(m) for m in mine] == [24, 24]
        assert sorted(mine[0] + mine[1]) == list(range(48))
        whole = [i for e, i in one["decoded"] if e == epoch]  # the one-process order, batch by batch
        for k, start in enumerate(range(0, 48, 10)):
            batch, half = whole[start:start + 10], len(whole[start:start + 10]) // 2
            assert mine[0][5 * k:5 * k + half] == batch[:half] and mine[1][5 * k:5 * k + half] == batch[half:]
    tested = [[i for e, i in result["streamed"]["decoded"] if e == "eval"] for result in results]
    assert tested == [[0, 1, 2, 3, 4, 10] * 2, [5, 6, 7, 8, 9, 11] * 2]
    for result in results:
        assert result["streamed"]["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
        for name, mask in one["masks"].items():
            assert torch.equal(result["streamed"]["masks"][name], mask), name
        for (loss, acc), (one_loss, one_acc) in zip(result["streamed"]["test"], one["test"]):
            assert acc == one_acc and loss == pytest.approx(one_loss, rel=1e-5)


def test_cli_trains_one_run_on_two_ranks(tmp_path, private_cache):
    """`torchrun -m sparsetrain train` on digits: one finished row, one metrics line an epoch,
    one checkpoint, the table printed once (rank 0 speaks)."""
    out = tmp_path / "out"
    done = torchrun("-m", "sparsetrain", "train", "--method", "rigl", "--model", "mlp", "--dataset", "digits",
                    "--epochs", "2", "--batch-size", "64", "--update-interval", "5", "--device", "cpu",
                    "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = sqlite3.connect(out / "results.db").execute("SELECT run_id, status, final FROM runs").fetchall()
    assert [row[1] for row in rows] == ["finished"]
    assert json.loads(rows[0][2])["world_size"] == 2
    folder = out / rows[0][0]
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
    assert torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2
    assert done.stdout.count("test accuracy") == 1


def test_own_loop_example_on_two_ranks():
    """examples/ddp_own_loop.py as the README launches it: RigL around a DDP model, masks
    proven identical after every step, the accuracy the README states."""
    import re

    done = torchrun(str(ROOT / "examples" / "ddp_own_loop.py"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = re.fullmatch(r"test accuracy (\S+) at density 0\.100, ITOP rate \S+; masks identical on all 2 ranks "
                        r"after every step", done.stdout.strip())
    assert line, done.stdout
    readme = (ROOT / "README.md").read_text()
    assert "torchrun --nproc-per-node 2 examples/ddp_own_loop.py" in readme
    figure = int(re.search(r"ddp_own_loop\.py` prints a test accuracy of about (\d+)%", readme).group(1))
    assert float(line.group(1)) >= figure / 100 - 0.05
