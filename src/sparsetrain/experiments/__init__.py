"""Run identity (config hash), run folders, the SQLite results store and the run itself."""

from sparsetrain.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text
from sparsetrain.experiments.rundir import RunDir
from sparsetrain.experiments.runner import run
from sparsetrain.experiments.spec import ExperimentConfig, RunSpec, allowed_keys, build_spec
from sparsetrain.experiments.store import SCHEMA_VERSION, ResultsStore, json_default, to_json

__all__ = [
    "ResultsStore",
    "RunDir",
    "ExperimentConfig",
    "RunSpec",
    "allowed_keys",
    "build_spec",
    "run",
    "SCHEMA_VERSION",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "json_default",
    "to_json",
]
