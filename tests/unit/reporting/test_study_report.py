"""Study tables and figures from hand-made store rows."""

import pytest

from sparsetrain.reporting import (
    plot_accuracy_vs_density, plot_layer_densities, study_groups, study_table, write_study_report,
)


def run(method, density, seed, acc, **config):
    layers = [{"name": "fc1.weight", "density": density or 1.0, "shape": [4, 4], "active": 1, "total": 16},
              {"name": "fc2.weight", "density": 1.0, "shape": [2, 4], "active": 8, "total": 8}]
    return {"run_id": f"{method}{density}{seed}{config}", "method": method, "density": density,
            "dataset": "digits", "model": "mlp", "seed": seed, "status": "finished",
            "final": {"test_acc": acc}, "layers": layers,
            "config": {"method": method, "seed": seed, **config}}


RUNS = [
    run("dense", None, 0, 0.90), run("dense", None, 1, 0.80),
    run("set", 0.1, 0, 0.86), run("set", 0.1, 1, 0.82),
    run("dense", None, 0, 0.50, label_noise=0.4), run("dense", None, 1, 0.60, label_noise=0.4),
    run("set", 0.1, 0, 0.70, label_noise=0.4),
    run("set", 0.1, 0, 0.1, data_fraction=0.5),  # no dense baseline in this scenario
    {"run_id": "unfinished", "method": "set", "density": 0.1, "final": None},
]


def test_study_groups_average_seeds_and_compare_with_dense_of_the_same_scenario():
    groups = {(g["scenario"], g["method"]): g for g in study_groups(RUNS)}
    assert set(groups) == {("clean", "dense"), ("clean", "set"), ("label_noise=0.4", "dense"),
                           ("label_noise=0.4", "set"), ("data_fraction=0.5", "set")}
    clean_set = groups[("clean", "set")]
    assert clean_set["n_seeds"] == 2 and clean_set["test_acc_mean"] == pytest.approx(0.84)
    assert clean_set["test_acc_std"] == pytest.approx(0.028284271, abs=1e-8)  # sample std of 0.86, 0.82
    assert clean_set["dense_acc_mean"] == pytest.approx(0.85)
    assert clean_set["delta"] == pytest.approx(-0.01)
    assert groups[("label_noise=0.4", "set")]["delta"] == pytest.approx(0.70 - 0.55)
    assert groups[("data_fraction=0.5", "set")]["delta"] is None
    assert [g["scenario"] for g in study_groups(RUNS)][0] == "clean"  # clean first, dense first
    assert clean_set["layers"][0] == {"name": "fc1.weight", "density": 0.1}


def test_study_table_and_html_report(tmp_path):
    table = study_table(RUNS)
    lines = [line for line in table.splitlines() if "label_noise=0.4" in line and " set " in line]
    assert len(lines) == 1 and " 70.00 " in lines[0] and "55.00 ± 7.07" in lines[0] and "+15.00" in lines[0]
    assert plot_accuracy_vs_density(RUNS, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_layer_densities(RUNS, tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
    html = write_study_report(RUNS, tmp_path / "r.html", title="t").read_text()
    assert html.count("data:image/png;base64,") == 2 and "+15.00" in html and "<table" in html
    empty = write_study_report([], tmp_path / "e.html").read_text()
    assert "No finished runs." in empty
