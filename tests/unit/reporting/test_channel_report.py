"""The report's channel counts per layer: only runs whose masks remove channels, one column per run."""

from sparsetrain.reporting import write_study_report
from sparsetrain.reporting.channels import channel_runs, channel_text


def _run(run_id, method, conv_active, dense_flops=1000, shrunk_flops=600, model="vgg11"):
    layers = [
        {"name": "features.0.weight", "shape": [8, 3, 3, 3], "density": 0.5, "active": 108, "total": 216,
         "flops": 100, "structure": "channel", "channels": 8, "active_channels": conv_active, "shrunk_flops": 60},
        {"name": "classifier.weight", "shape": [10, 8], "density": 1.0, "active": 80, "total": 80,
         "flops": 160, "structure": "dense", "channels": 10, "active_channels": 10, "shrunk_flops": 160},
    ]
    return {"run_id": run_id, "method": method, "model": model, "dataset": "cifar10", "density": 0.5, "seed": 0,
            "status": "finished", "config": {"method": method, "density": 0.5},
            "final": {"test_acc": 0.5, "dense_flops": dense_flops, "shrunk_flops": shrunk_flops}, "layers": layers}


def test_channel_table_lists_only_runs_that_remove_channels():
    runs = [_run("aaaa1111/seed_0", "chase", 5), _run("bbbb2222/seed_0", "rigl", 8, shrunk_flops=1000),
            {**_run("cccc3333/seed_0", "chase", 4), "status": "failed"},
            {**_run("dddd4444/seed_0", "rigl", 3), "layers": [{"name": "old", "density": 1.0}]}]  # stored before
    assert [r["run_id"] for r in channel_runs(runs)] == ["aaaa1111/seed_0"]
    text = channel_text(runs)
    lines = text.splitlines()
    assert lines[0] == "cifar10/vgg11:"
    assert "chase d=0.5 (aaaa1111)" in lines[1] and "rigl" not in text
    assert lines[3].split() == ["features.0.weight", "5/8"]
    assert lines[4].split() == ["classifier.weight", "10/10"]
    assert lines[5].split()[-2:] == ["600", "(60.0%)"]  # 600 of 1000 dense FLOPs
    assert channel_text([runs[1]]) is None


def test_html_report_has_the_channel_section_and_per_layer_channels(tmp_path):
    runs = [_run("aaaa1111/seed_0", "chase", 5), _run("bbbb2222/seed_0", "rigl", 8, shrunk_flops=1000)]
    page = write_study_report(runs, tmp_path / "r.html").read_text()
    assert "<h2>Channels per layer</h2>" in page and 'alt="active channels per layer"' in page
    assert "<td class=num>5/8</td>" in page and "<th>shrunk FLOPs</th>" in page
    page = write_study_report([runs[1]], tmp_path / "s.html").read_text()
    assert "Channels per layer" not in page  # no run removes channels
