import base64

import pytest

from sparsetrain.reporting import (
    comparison_table,
    format_table,
    plot_comparison,
    summarize_runs,
    write_html_report,
)


def make_run(method, seed, acc, density=0.1, **final):
    layers = [
        {"name": "conv1", "shape": [6, 1, 5, 5], "density": 0.6, "active": 90, "total": 150,
         "flops": 1000},
        {"name": "fc1", "shape": [120, 400], "density": 0.05, "active": 2400, "total": 48000,
         "flops": 2400},
    ]
    return {
        "run_id": f"{method}-h/seed_{seed}",
        "method": method,
        "model": "lenet5",
        "dataset": "digits",
        "density": density,
        "seed": seed,
        "status": "finished",
        "duration_s": 10.0 + seed,
        "final": {"test_acc": acc, "active_weights": 1000 + 10 * seed, "total_weights": 10000,
                  "flops": 2.0e6, "itop_rate": 0.5 + 0.1 * seed, **final},
        "layers": layers,
    }


RUNS = [make_run("rigl", s, a) for s, a in enumerate((0.90, 0.92, 0.94))] + [
    make_run("set", 0, 0.80)
]


def test_summarize_runs_mean_and_std_by_hand():
    summary = summarize_runs(RUNS)
    assert [(s["method"], s["density"]) for s in summary] == [("rigl", 0.1), ("set", 0.1)]
    rigl, set_ = summary
    assert rigl["n_seeds"] == 3
    assert rigl["test_acc_mean"] == pytest.approx(0.92)
    # sample std: sqrt((0.02^2 + 0 + 0.02^2) / (3 - 1)) = 0.02
    assert rigl["test_acc_std"] == pytest.approx(0.02)
    assert rigl["active_weights"] == pytest.approx(1010)
    assert rigl["total_weights"] == pytest.approx(10000)
    assert rigl["flops"] == pytest.approx(2.0e6)
    assert rigl["itop_rate"] == pytest.approx(0.6)
    assert rigl["duration_s"] == pytest.approx(11.0)
    assert set_["n_seeds"] == 1
    assert set_["test_acc_std"] is None  # one seed: no spread


def test_summarize_skips_unfinished_and_keeps_densities_apart():
    unfinished = {**make_run("set", 1, 0.1), "final": None}
    failed = {**make_run("set", 2, 0.3), "status": "failed"}
    runs = RUNS + [make_run("rigl", 0, 0.5, density=0.05), unfinished, failed]
    summary = summarize_runs(runs)
    assert [(s["method"], s["density"], s["n_seeds"]) for s in summary] == [
        ("rigl", 0.05, 1), ("rigl", 0.1, 3), ("set", 0.1, 1)  # by method, then density
    ]


def test_format_table_aligns_columns():
    text = format_table(
        [{"name": "a", "x": 1.23456789, "n": 1234}, {"name": "long", "x": None, "n": 5}],
        [("name", "name"), ("x", "value"), ("n", "count")],
    )
    assert text.splitlines() == [
        "name  value  count",
        "----  -----  -----",
        "a     1.235  1,234",
        "long      -      5",
    ]
    assert format_table([{"x": 0.5}], [("x", "x")], formats={"x": ".2f"}).splitlines()[-1] == "0.50"


def test_comparison_table():
    lines = comparison_table(RUNS).splitlines()
    header = lines[0]
    for name in ("method", "density", "seeds", "test acc", "active weights", "FLOPs", "ITOP",
                 "time (s)"):
        assert name in header
    assert "92.00 ± 2.00" in lines[2] and lines[2].startswith("digits/lenet5  rigl")
    assert "80.00 " in lines[3] and "±" not in lines[3] and lines[3].startswith("digits/lenet5  set")
    assert "no dense run" in lines[2]  # no dense run of these settings: nothing borrowed
    # run ids: the shortest unique prefixes, here whole ids as the 8-character prefixes are shared
    assert lines[2].endswith("rigl-h/seed_0 rigl-h/seed_1 rigl-h/seed_2") and lines[3].endswith("set-h/se")
    assert "1,010" in lines[2] and "2M" in lines[2] and "0.600" in lines[2] and "11.0" in lines[2]


def test_plot_writes_png(tmp_path):
    path = plot_comparison(RUNS, tmp_path / "figs" / "comparison.png")
    assert path == tmp_path / "figs" / "comparison.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in path.parent.iterdir()] == ["comparison.png"]


def test_plot_without_runs_still_writes_png(tmp_path):
    path = plot_comparison([], tmp_path / "empty.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_html_report(tmp_path):
    runs = RUNS + [make_run("<x>", 0, 0.5)]
    figure = plot_comparison(runs, tmp_path / "fig.png")
    path = write_html_report(runs, tmp_path / "report.html", title="Digits & <sparse>",
                             figure=figure)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Digits &amp; &lt;sparse&gt;</title>" in text
    assert "<x>" not in text and "&lt;x&gt;" in text
    assert "<td>rigl</td>" in text and "92.00 ± 2.00" in text
    assert "<td>set</td>" in text and "<td class=num>80.00</td>" in text
    png = base64.b64encode(figure.read_bytes()).decode()
    assert f"data:image/png;base64,{png}" in text
    # one per-layer table per run, with the layer names and shapes
    assert text.count("<td>conv1</td>") == len(runs)
    assert "120×400" in text
    assert "rigl-h/seed_2" in text
