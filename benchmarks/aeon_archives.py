"""Read every UCR/UEA archive shipped inside the aeon package with our own reader, as laid out there.

    pip install --no-deps aeon
    PYTHONPATH=src python benchmarks/aeon_archives.py --doc docs/ucr_archives.md

For each ``<folder>/<name>_TRAIN.ts`` under aeon's ``datasets/data`` it loads ``ucr`` with
``pad: none`` and ``pad: zero`` and writes the sizes, or the reader's one-sentence refusal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from method_table import aeon_archives, publish  # noqa: E402

from sparsetrain.data import load  # noqa: E402
from sparsetrain.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default=None)
    args = parser.parse_args(argv)
    root = Path(aeon_archives())
    lines = ["## UCR/UEA archives inside aeon, read by `--dataset ucr`", "",
             "From `aeon/datasets/data` inside the installed package (aeon's own layout: a folder per archive holding `_TRAIN.ts`, `_TEST.ts` and "
             "for some `_TRAIN.tsv`).", "",
             "| archive | pad: none | pad: zero |", "|---|---|---|"]
    for train in sorted(root.glob("*/*_TRAIN.ts")):
        name = train.name[: -len("_TRAIN.ts")]
        cells = []
        for pad in ("none", "zero"):
            try:
                s = load("ucr", data_dir=str(train.parent), name=name, val_fraction=0.0, seed=0, pad=pad)
                cells.append(f"{len(s.train)} train / {len(s.test)} test, shape {s.input_shape}, {s.num_classes} classes")
            except UserError as exc:
                cells.append("refused: " + str(exc).replace(str(root) + "/", "").replace("|", "/"))
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "Command: `PYTHONPATH=src python benchmarks/aeon_archives.py --doc docs/ucr_archives.md`", ""]
    return publish(lines, args.doc)


if __name__ == "__main__":
    sys.exit(main())
