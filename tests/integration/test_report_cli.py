"""`sparsetrain report` on a store: run ids that `show` accepts, and runs that are no result listed apart."""

from sparsetrain.cli import main
from sparsetrain.experiments import ResultsStore, build_spec

RIGL = {"method": "rigl", "density": 0.1, "model": "mlp", "dataset": "digits", "epochs": 10}


def add(store, values, acc=None, status="failed"):
    spec = build_spec(values)
    run_id = store.run_id(spec.config_hash, spec.experiment.seed)
    store.start(run_id, config_hash=spec.config_hash, seed=spec.experiment.seed, config=spec.resolved())
    store.log_epoch(run_id, 1, {"train_loss": 2.0, "test_acc": 0.3, "density": 0.1, "itop_rate": 0.1})
    if acc is None:
        store.stop(run_id, status, f"{status}: the loss is nan" if status == "diverged" else f"{status} by SIGTERM")
    else:
        store.finish(run_id, {"test_acc": acc}, [])
    return run_id


def test_report_prints_ids_show_accepts_and_lists_failed_runs_apart(tmp_path, capsys):
    with ResultsStore(tmp_path / "results.db") as store:
        ten = add(store, RIGL, 0.4)
        thirty = add(store, {**RIGL, "epochs": 30}, 0.8)
        diverged = add(store, {**RIGL, "epochs": 30, "seed": 1}, status="diverged")
        interrupted = add(store, {**RIGL, "epochs": 30, "seed": 2}, status="interrupted")
    html = tmp_path / "r.html"
    assert main(["report", "--out", str(tmp_path), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    table, rest = out.split("Not a result", 1)
    rows = {line.split()[3]: line.split() for line in table.splitlines() if line.startswith("digits/mlp")}
    assert set(rows) == {"10", "30"}  # two experiments, not one row "seeds 2"
    assert rows["30"][4:6] == ["1", "80.00"]  # the stopped seeds are neither counted nor averaged
    assert diverged[:8] in rest and "diverged: the loss is nan" in rest
    assert interrupted[:8] in rest and "interrupted by SIGTERM" in rest
    for run_id, row in ((ten, rows["10"]), (thirty, rows["30"])):
        printed = row[-1]
        assert run_id.startswith(printed)
        assert main(["show", printed, "--out", str(tmp_path)]) == 0
        assert f"run {run_id} " in capsys.readouterr().out
    page = html.read_text()
    assert "Runs that are no result" in page and "loss is nan" in page
    assert page.count('alt="learning curves of ') == 4
