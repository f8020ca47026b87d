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


def test_runs_stored_before_structure_and_precision_existed_keep_their_hash():
    # hashes computed by the previous release (main at 812efae, before the structure and precision keys)
    assert build_spec({"method": "rigl", "model": "mlp", "dataset": "digits"}).config_hash == "5ab0eee98b9b"
    assert build_spec({"method": "dense", "model": "lenet5", "dataset": "digits", "epochs": 3}).config_hash == \
        "b6e310f7e631"
    # a value other than the neutral one is part of the identity
    base = {"method": "rigl", "model": "mlp", "dataset": "digits"}
    assert len({build_spec({**base, **extra}).config_hash
                for extra in ({}, {"structure": "2:4", "density": 0.5}, {"density": 0.5}, {"precision": "bf16"})}) == 4


def test_a_stored_row_without_the_new_keys_is_the_same_experiment_in_a_report():
    from sparsetrain.reporting.groups import identity
    new = build_spec({"method": "rigl", "model": "mlp", "dataset": "digits"}).resolved()
    old = {k: v for k, v in new.items() if k not in ("structure", "precision")}
    assert identity({"config": old}) == identity({"config": new})
