"""Robustness tables and figures from a store holding hand-made robustness runs."""

import re

import numpy as np
import pytest

from sparsetrain.experiments import ResultsStore
from sparsetrain.reporting import write_study_report
from sparsetrain.reporting.robustness import robust_curves, robustness_groups, robustness_table

DENSE_ACC = {"gaussian_noise": [0.8, 0.6], "brightness": [0.9, 0.7]}
SET_ACC = {0.5: {"gaussian_noise": [0.85, 0.7], "brightness": [0.9, 0.8]},
           0.9: {"gaussian_noise": [0.7, 0.5], "brightness": [0.85, 0.55]}}


def add(store, run_id, method, density, seed, final, epochs=(), **config):
    cfg = {"method": method, "model": "lenet5", "dataset": "digits", "density": density, "seed": seed, **config}
    store.start(run_id, config_hash=run_id, seed=seed, config=cfg)
    for k, metrics in enumerate(epochs, 1):
        store.log_epoch(run_id, k, metrics)
    layers = [{"name": "fc.weight", "density": density or 1.0, "shape": [2, 2], "active": 2, "total": 4}]
    store.finish(run_id, final, layers)


def robust_final(matrix, clean, pgd):
    return {"test_acc": clean, "corruption_clean_acc": clean, "corruption_accuracy": matrix,
            "corruption_acc": float(np.mean(list(matrix.values()))), "robust_acc_linf": pgd,
            "frequency_accuracy": {"low": {"0.5": 0.5}, "high": {"0.5": 0.2}}}


@pytest.fixture()
def store(tmp_path):
    with ResultsStore(tmp_path / "results.db") as st:
        add(st, "dense0", "dense", None, 0, robust_final(DENSE_ACC, 0.95, 0.30))
        for density, matrix in SET_ACC.items():
            add(st, f"set{density}", "set", density, 0, robust_final(matrix, 0.94, 0.25))
        for wot in ("none", "block"):
            accs = (0.3, 0.5, 0.4) if wot == "none" else (0.3, 0.5, 0.55)
            curve = [{"test_acc": 0.9, "test_robust_acc": a} for a in accs]
            add(st, f"at{wot}", "dense", None, 0, {"test_acc": 0.9, "robust_acc_linf": curve[-1]["test_robust_acc"]},
                epochs=curve, adversarial_training=True, wot=wot)
        yield st


def hand_mce(matrix, clean, ref, ref_clean):
    ce = [sum(1 - a for a in matrix[c]) / sum(1 - a for a in ref[c]) for c in ref]
    rce = [sum((1 - a) - (1 - clean) for a in matrix[c]) / sum((1 - a) - (1 - ref_clean) for a in ref[c]) for c in ref]
    return np.mean(ce), np.mean(rce)


def test_mce_against_the_dense_run_of_the_same_setup_equals_the_hand_computation(store):
    groups = {(g["scenario"], g["method"], g["density"]): g for g in robustness_groups(store.runs())}
    for density, matrix in SET_ACC.items():
        mce, rmce = hand_mce(matrix, 0.94, DENSE_ACC, 0.95)
        g = groups[("clean", "set", density)]
        assert g["mce"][0] == pytest.approx(mce) and g["relative_mce"][0] == pytest.approx(rmce)
        assert g["matrix"] == {c: pytest.approx(v) for c, v in matrix.items()}
    # e.g. density 0.5: CE = (0.15+0.3)/(0.2+0.4), (0.1+0.2)/(0.1+0.3) -> mean 0.75
    assert groups[("clean", "set", 0.5)]["mce"][0] == pytest.approx(0.75)
    assert groups[("adversarial training", "dense", None)]["mce"][0] is None  # no corruption numbers
    assert ("adversarial training, WOT-block", "dense", None) in groups


def test_text_table_shows_mce_and_attack_columns(store):
    table = robustness_table(store.runs())
    mce, rmce = hand_mce(SET_ACC[0.9], 0.94, DENSE_ACC, 0.95)
    line = next(l for l in table.splitlines() if " set " in l and " 0.9 " in l)
    assert f" {mce:.3f} " in line and f" {rmce:.3f} " in line and "±" not in line  # one seed: no std
    assert "PGD L∞ (%)" in table and line.endswith(" 25.00")
    delta = 100 * (np.mean(list(SET_ACC[0.9].values())) - np.mean(list(DENSE_ACC.values())))
    assert f"{delta:+.2f}" in line


def test_robust_curves_average_the_stored_epochs_per_training_variant(store):
    runs = store.runs()
    histories = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
    curves = robust_curves(runs, histories)
    assert curves[("digits/lenet5", "adversarial training", "dense", None)] == pytest.approx([0.3, 0.5, 0.4])
    assert curves[("digits/lenet5", "adversarial training, WOT-block", "dense", None)][-1] == pytest.approx(0.55)


def test_html_embeds_heat_maps_density_and_epoch_figures_and_the_mce_table(store, tmp_path):
    runs = store.runs()
    histories = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
    page = write_study_report(runs, tmp_path / "r.html", histories=histories).read_text()
    # study: accuracy vs density, per-layer density; robustness: vs density, heat maps, curves;
    # learning curves of the two runs with stored epochs
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)) == 7
    assert 'alt="learning curves of atnone"' in page and 'alt="learning curves of atblock"' in page
    for alt in ("robustness vs density", "corruption heat maps", "robust accuracy over epochs"):
        assert f'alt="{alt}"' in page
    mce, _ = hand_mce(SET_ACC[0.5], 0.94, DENSE_ACC, 0.95)
    assert f"<td class=num>{mce:.3f}</td>" in page
    assert "Frequency analysis" in page and "low-pass 0.5" in page
    without = write_study_report(runs, tmp_path / "r2.html").read_text()
    assert without.count("<img") == 4  # no histories: no epoch curves
