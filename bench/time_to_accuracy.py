"""Training speed at equal accuracy: the seconds each trainer needs to reach the same valid
macro-F1 on the same corpus, beside its raw tokens/s (a throughput that ends at a worse model is
not a speed).

The corpus is built from params.yaml as the stages would (`-S ingest.source=…` for another).
Trainers, each on the train split, scored on the valid split:

- `linear` (the default family): one L-BFGS fit, its wall time;
- `bag` (the fastText-style family) at the params' bag settings, `--bag-lr` and `--bag-batch`:
  valid macro-F1 after every epoch, the time to the first epoch at the target;
- fastText (`pip install -e '.[bench]'`) on the same tokens: `epoch` = 1, 2, 3, 5, 8, 13, 20 at
  lr 0.1, 0.5 and 1.0 (wordNgrams 2, 2 threads); each point is a full run, timed.

The target is the highest valid macro-F1 every trainer reaches (the lowest of their bests), so
each time is "time to match the others"; the ratio is fastText's time / ours.

    .venv/bin/python bench/time_to_accuracy.py
    .venv/bin/python bench/time_to_accuracy.py -S ingest.source=data/raw/mycorpus.csv
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.model_vs_baseline import _ft_predict, build_splits, load_with_overrides, macro_f1  # noqa: E402
from textclf.artifacts import arrow_values  # noqa: E402
from textclf.data.vocab import build_vocab, count_tokens  # noqa: E402
from textclf.training import run as training_run  # noqa: E402
from textclf.training.loop import tune_allocator  # noqa: E402

FT_EPOCHS = (1, 2, 3, 5, 8, 13, 20)
FT_LRS = (0.1, 0.5, 1.0)


def project_curves(parts, p, bag_lr: float, bag_batch: int) -> dict[str, list[tuple[float, float]]]:
    """(seconds, valid macro-F1) points per family, the clock started before encoding."""
    tokens = arrow_values(parts["train"]["tokens"])
    vocab = build_vocab(count_tokens(tokens, p["vocab"].ngrams), p["vocab"])
    out = {}
    t0 = time.perf_counter()
    data = training_run.Prepared(parts["train"], parts["valid"], vocab)
    lin = training_run.train_config(data, p["train"].model_copy(update={"model": "linear"}), torch.device("cpu"))
    out["linear"] = [(time.perf_counter() - t0, lin.result.state.best_f1)]
    bag_p = p["train"].model_copy(update={"model": "bag", "lr": bag_lr, "batch_size": bag_batch, "patience": 3})
    points = []
    t0 = time.perf_counter()
    data = training_run.Prepared(parts["train"], parts["valid"], vocab)
    training_run.train_config(
        data,
        bag_p,
        torch.device("cpu"),
        on_epoch=lambda rec: points.append((time.perf_counter() - t0, rec["valid_macro_f1"])),
    )
    out["bag"] = points
    return out


def fasttext_curve(parts) -> tuple[list[tuple[float, float, str]], float] | None:
    try:
        import fasttext
    except ImportError:
        return None

    def lines(df):
        return [" ".join(t) for t in df["tokens"]]

    labels = ["__label__" + str(v).replace(" ", "_") for v in parts["valid"]["label"]]
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text(
            "".join(
                f"__label__{str(lab).replace(' ', '_')} {t}\n"
                for lab, t in zip(parts["train"]["label"], lines(parts["train"]), strict=True)
            ),
            encoding="utf-8",
        )
        valid = lines(parts["valid"])
        for lr in FT_LRS:
            for epoch in FT_EPOCHS:
                t0 = time.perf_counter()
                m = fasttext.train_supervised(str(path), epoch=epoch, lr=lr, wordNgrams=2, thread=2, verbose=0)
                seconds = time.perf_counter() - t0
                points.append((seconds, macro_f1(labels, _ft_predict(m, valid)), f"lr {lr}, {epoch} epochs"))
    ntok = sum(len(t) for t in parts["train"]["tokens"])
    one = [s for s, _, how in points if how.endswith(" 1 epochs")]
    return points, ntok / min(one)


def first_at(points, target: float):
    hits = [pt for pt in points if pt[1] >= target - 1e-12]
    return min(hits, key=lambda pt: pt[0]) if hits else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bag-lr", type=float, default=0.01, help="the bag family's lr (AdamW)")
    ap.add_argument("--bag-batch", type=int, default=256, help="the bag family's batch size")
    ap.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        help="section.key=value, as dvc exp run -S",
    )
    args = ap.parse_args(argv)
    tune_allocator()
    p = load_with_overrides(args.overrides)
    parts = build_splits(p)
    print(
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}; corpus {p['ingest'].source}: "
        f"{len(parts['train'])} train / {len(parts['valid'])} valid documents"
    )
    curves = project_curves(parts, p, args.bag_lr, args.bag_batch)
    ft = fasttext_curve(parts)
    bests = {name: max(f for _, f in pts) for name, pts in curves.items()}
    if ft is not None:
        bests["fasttext"] = max(f for _, f, _ in ft[0])
    target = min(bests.values())
    print(
        "best valid macro-F1: "
        + ", ".join(f"{k} {v:.4f}" for k, v in bests.items())
        + f"; target (the lowest best) {target:.4f}"
    )
    times = {}
    for name, pts in curves.items():
        hit = first_at(pts, target)
        times[name] = hit[0] if hit else float("inf")
        print(
            f"  {name:8s} reaches it in {times[name]:7.2f} s"
            + (f" (epoch {pts.index(hit) + 1})" if name == "bag" else "")
        )
    if ft is not None:
        hit = first_at(ft[0], target)
        times["fasttext"] = hit[0] if hit else float("inf")
        print(
            f"  fasttext reaches it in {times['fasttext']:7.2f} s ({hit[2] if hit else 'never'}); "
            f"raw rate {ft[1] / 1e6:.2f} M tokens/s (1 epoch)"
        )
        for name in ("linear", "bag"):
            print(f"  fastText time / {name} time = {times['fasttext'] / times[name]:.2f}x")
    best = np.argmax([bests[k] for k in bests])
    print(f"the best valid macro-F1 of all: {list(bests)[best]} {max(bests.values()):.4f}")


if __name__ == "__main__":
    main()
