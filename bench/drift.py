"""Benchmark: the drift gate's false holds on in-distribution batches, and its holds on planted
shifts, for a built repository (after `dvc repro`).

In-distribution batches are random draws from the valid split (documents the model did not
train on, from the same corpus); the reference is the test split and the train split's labels,
as the new-data flow uses them. Planted: a batch of another corpus's text (`--foreign`, a CSV
with a `text` column), and a batch of one label only from the valid split.

    .venv/bin/python bench/drift.py [--repo .] [--batches 40] [--sizes 50,300] [--foreign other.csv] \
        [-S drift.max_oov_increase=0.2 ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textclf import drift, paths  # noqa: E402
from textclf.artifacts import read_parquet  # noqa: E402
from textclf.params import DriftParams, load_params  # noqa: E402
from textclf.predict import Predictor  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--sizes", default="50,300")
    ap.add_argument("--foreign", default=None, help="CSV with a text column: a batch from another corpus")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="drift.KEY=VALUE")
    args = ap.parse_args()
    root = Path(args.repo)
    try:
        base = load_params("drift", root / "params.yaml")
    except Exception:  # noqa: BLE001 - a repository from before the drift section
        base = DriftParams()
    values = base.model_dump()
    for o in args.overrides:
        key, value = o.removeprefix("drift.").split("=", 1)
        values[key] = type(values[key])(value)
    p = DriftParams(**values)
    predictor = Predictor(root / paths.BUNDLE)
    ref = drift.load_reference(root, predictor)
    valid = read_parquet(root / paths.VALID, columns=["text", "label"])
    rng = np.random.default_rng(0)
    print(f"{args.repo}: reference OOV {ref.oov_rate:.3f}, labels {ref.label_shares}; {p}")
    for size in (int(s) for s in args.sizes.split(",")):
        held = {name: 0 for name in ("oov", "labels", "confidence", "length")}
        any_held = 0
        for _ in range(args.batches):
            idx = rng.choice(len(valid), size=min(size, len(valid)), replace=False)
            batch = valid.iloc[idx]
            checks = drift.check_batch(batch["text"].tolist(), batch["label"], predictor, ref, p)
            for c in checks:
                held[c.name] += c.held
            any_held += bool(drift.held(checks))
        print(
            f"in-distribution, {args.batches} batches of {size}: held {any_held} "
            f"({any_held / args.batches:.1%}); by check {held}"
        )
    one = valid[valid["label"] == valid["label"].value_counts().index[0]].head(300)
    checks = drift.check_batch(one["text"].tolist(), one["label"], predictor, ref, p)
    print(f"one label only ({len(one)} `{one['label'].iloc[0]}`): {'HELD' if drift.held(checks) else 'passed'}")
    for c in checks:
        print(f"   {c.name}: {c.value if c.value is None else round(c.value, 3)} held={c.held}")
    if args.foreign:
        other = pd.read_csv(args.foreign)
        other = other.sample(min(300, len(other)), random_state=0)
        labels = rng.choice(list(ref.label_shares), size=len(other))
        checks = drift.check_batch(other["text"].astype(str).tolist(), labels, predictor, ref, p)
        print(f"foreign ({args.foreign}, 300): {'HELD' if drift.held(checks) else 'passed'}: {drift.reason(checks)}")
        for c in checks:
            print(f"   {c.name}: {c.value if c.value is None else round(c.value, 3)} held={c.held}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
