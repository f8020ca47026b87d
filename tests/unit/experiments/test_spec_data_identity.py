"""Whether data_dir is part of a run's identity: only where the folder decides what the data is."""

import os

from sparsetrain.experiments import build_spec


def _hash(**values):
    return build_spec({"method": "dense", "model": "mlp", **values}).config_hash


def test_cache_and_verified_downloads_ignore_the_folder():
    assert _hash(dataset="mnist1d", data_dir="/a") == _hash(dataset="mnist1d", data_dir="/b") == _hash(dataset="mnist1d")
    assert _hash(dataset="cifar10", data_dir="/a") == _hash(dataset="cifar10", data_dir="/b")
    assert _hash(dataset="cifar10", data_dir="/a", dataset_options={"verify": True}) == \
        _hash(dataset="cifar10", data_dir="/b", dataset_options={"verify": True})


def test_own_files_make_the_folder_part_of_the_identity(tmp_path, monkeypatch):
    for dataset, options in (("npz", None), ("imagefolder", None), ("ucr", {"name": "X"}), ("mnist", None),
                             ("cifar10", {"verify": False})):
        assert _hash(dataset=dataset, data_dir="/a", dataset_options=options) != \
            _hash(dataset=dataset, data_dir="/b", dataset_options=options), dataset
    # the same folder named relatively or absolutely is the same data
    monkeypatch.chdir(tmp_path)
    assert _hash(dataset="npz", data_dir="data") == _hash(dataset="npz", data_dir=os.path.join(tmp_path, "data"))
    # and the resolved config keeps what the user wrote
    spec = build_spec({"method": "dense", "model": "mlp", "dataset": "npz", "data_dir": "data"})
    assert spec.resolved()["data_dir"] == "data"
