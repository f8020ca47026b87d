"""The runner applies the scenarios of a config once, after loading the data."""

import math

import numpy as np

from sparsetrain.data import load
from sparsetrain.experiments import ResultsStore, build_spec, run

TINY = {"method": "dense", "dataset": "digits", "model": "mlp", "model_options": {"widths": [8]},
        "epochs": 1, "batch_size": 256}


def test_limited_noisy_data_and_an_evaluation_subset_reach_the_trainer(tmp_path):
    counts = np.bincount(load("digits", seed=0, val_fraction=0.1).train.y.numpy())
    expected = sum(math.floor(0.5 * n + 0.5) for n in counts)  # round half up, per class
    with ResultsStore(tmp_path / "results.db") as store:
        half = run(build_spec({**TINY, "data_fraction": 0.5, "label_noise": 0.2}), root=tmp_path,
                   store=store, progress=False, log=lambda m: None)
        hard = run(build_spec({**TINY, "subset": "hardest", "subset_split": "test", "subset_fraction": 0.25,
                               "score_epochs": 1, "score_runs": 1}),
                   root=tmp_path, store=store, progress=False, log=lambda m: None)
    assert half["final"]["train_samples"] == expected and half["final"]["test_samples"] == 360
    assert half["config"]["label_noise"] == 0.2
    assert hard["final"]["train_samples"] == counts.sum() and hard["final"]["test_samples"] == 90
    assert len(list((tmp_path / "scores").glob("el2n-*.npz"))) == 1
