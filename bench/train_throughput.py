"""Training throughput: the project's trainer vs the textbook EmbeddingBag loop (vs fastText).

One synthetic corpus, built directly as flat int64 ids + offsets (no text): Zipfian token ids
over a frequency-sorted vocabulary (id 0 = padding and 1 = `<unk>` never occur), log-normal
document lengths (mean ~45), and 2 balanced classes that the tokens reveal (10% of each
document's tokens come from a 1000-id "topic" of its class), so it is learnable.

Variants, all on the same training documents and the same device:

1. textbook: the PyTorch EmbeddingBag text-classification tutorial's loop — a DataLoader over
   per-document items, a Python `collate_fn` building (labels, flat ids, offsets) with
   `torch.cat`, batch 64, SGD lr 5, `nn.EmbeddingBag(mean)` + Linear, dense gradients,
   `clip_grad_norm_(0.1)`. The per-document items are id lists (the tutorial's `text_pipeline`
   output): tokenising text is *not* charged to it. It runs a bounded number of shuffled batches
   (`--textbook-seconds` of them after a short warm-up); tokens/s is tokens in those batches /
   their wall time, i.e. the steady-state rate a full epoch would run at.
2. project bag: `stages.train.fit` — corpus resident on the device, batches cut by index from a
   permutation, SGD with sparse embedding gradients, each `--batch-sizes` entry, `--epochs`
   epochs; tokens/s is fit's own figure (train tokens / epoch time, validation excluded), after
   an untimed warm-up fit on a few batches.
3. fastText (only if `import fasttext` works): the same corpus written as `__label__k w<id> ...`
   lines, dim 64, unigrams, one thread per torch thread; tokens/s from the difference between
   a 1-epoch and a (1 + epochs)-epoch run, so reading the file and building the dictionary are
   not charged to it.

    .venv/bin/python bench/train_throughput.py                 # 400k docs, vocab 200k
    .venv/bin/python bench/train_throughput.py --quick         # 50k docs
    .venv/bin/python bench/train_throughput.py --device cuda --epochs 5

Targets (issue 3): on CPU >= 25x the textbook loop and >= 1x fastText; on a CUDA GPU
>= 200 M tokens/s for `bag`.
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textclf.model import ModelConfig  # noqa: E402
from textclf.params import TrainParams  # noqa: E402
from textclf.training.loop import Encoded, fit, resolve_device, tune_allocator

EMBED_DIM = 64
NUM_CLASSES = 2


# ---------------------------------------------------------------------------------------------
# corpus


def make_corpus(
    n_docs: int,
    vocab: int,
    mean_len: float,
    seed: int,
    zipf_s: float = 1.0,
    topic_share: float = 0.1,
    topic_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids int64 [total], offsets int64 [n+1], labels int64 [n]); ids in [2, vocab).

    Every token is drawn from one Zipf-Mandelbrot distribution over the whole vocabulary, except
    a `topic_share` of them, drawn (Zipf again) from `topic_size` mid-frequency ids that belong to
    the document's class: learnable, with a Bayes error from short documents without any."""
    rng = np.random.default_rng(seed)
    sigma = 0.6
    lengths = rng.lognormal(np.log(mean_len) - sigma**2 / 2, sigma, n_docs)
    lengths = np.clip(np.rint(lengths), 1, 20 * mean_len).astype(np.int64)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    labels = rng.integers(0, NUM_CLASSES, n_docs, dtype=np.int64)

    def zipf(n_values: int, n_draws: int) -> np.ndarray:
        cdf = np.cumsum(1.0 / (np.arange(1, n_values + 1, dtype=np.float64) + 2.7) ** zipf_s)
        return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n_draws)), n_values - 1)

    ids = zipf(vocab - 2, total).astype(np.int64) + 2  # rank r -> id r + 2 (frequency-sorted)
    lo, hi = min(100, vocab // 4), min(vocab - 2, max(100, vocab // 10))
    size = max(1, min(topic_size, (hi - lo) // NUM_CLASSES))
    topics = (rng.permutation(np.arange(lo, hi))[: size * NUM_CLASSES] + 2).reshape(NUM_CLASSES, size)
    mask = rng.random(total) < topic_share
    token_class = np.repeat(labels, lengths)[mask]
    ids[mask] = topics[token_class, zipf(size, int(mask.sum()))]
    return ids, offsets, labels


def subset(ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray, start: int, stop: int) -> Encoded:
    """Documents [start, stop) as an Encoded split (CPU tensors)."""
    lo, hi = offsets[start], offsets[stop]
    return Encoded(
        torch.from_numpy(ids[lo:hi].copy()),
        torch.from_numpy(offsets[start : stop + 1] - lo),
        torch.from_numpy(labels[start:stop].copy()),
    )


# ---------------------------------------------------------------------------------------------
# 1. the textbook loop (PyTorch "Text classification with the torchtext library" tutorial)


class DocDataset(torch.utils.data.Dataset):
    """One item per document: (label, list of token ids) — what the tutorial's pipelines give."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray):
        self.ids, self.offsets, self.labels = ids, offsets, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return int(self.labels[i]), self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()


class TextClassificationModel(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, num_class: int):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
        self.fc = nn.Linear(embed_dim, num_class)
        initrange = 0.5
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.fc.weight.data.uniform_(-initrange, initrange)
        self.fc.bias.data.zero_()

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))


def textbook(
    ids, offsets, labels, vocab: int, device: torch.device, seconds: float, seed: int
) -> tuple[float, int, int, float]:
    """tokens/s of the tutorial's loop over a bounded number of batches (+ batches, docs, s)."""

    def collate_batch(batch):
        label_list, text_list, offs = [], [], [0]
        for _label, _text in batch:
            label_list.append(_label)
            processed_text = torch.tensor(_text, dtype=torch.int64)
            text_list.append(processed_text)
            offs.append(processed_text.size(0))
        label_list = torch.tensor(label_list, dtype=torch.int64)
        offs = torch.tensor(offs[:-1]).cumsum(dim=0)
        text_list = torch.cat(text_list)
        return label_list.to(device), text_list.to(device), offs.to(device)

    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        DocDataset(ids, offsets, labels), batch_size=64, shuffle=True, collate_fn=collate_batch
    )
    model = TextClassificationModel(vocab, EMBED_DIM, NUM_CLASSES).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=5)
    model.train()
    warmup, n_batches, n_docs, n_tokens = 5, 0, 0, 0
    t0 = 0.0
    for i, (label, text, offs) in enumerate(loader):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        optimizer.zero_grad()
        predicted_label = model(text, offs)
        loss = criterion(predicted_label, label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if i >= warmup:
            n_batches += 1
            n_docs += len(label)
            n_tokens += len(text)
            if time.perf_counter() - t0 >= seconds:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return n_tokens / elapsed, n_batches, n_docs, elapsed


# ---------------------------------------------------------------------------------------------
# 2. the project's trainer


def project(
    train: Encoded,
    valid: Encoded,
    vocab: int,
    device: torch.device,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int,
) -> tuple[float, float, float]:
    """(tokens/s, valid macro-F1 of the last epoch, epoch seconds) of stages.train.fit."""
    cfg = ModelConfig(type="bag", num_embeddings=vocab, embed_dim=EMBED_DIM, num_classes=NUM_CLASSES)
    p = TrainParams(
        model="bag",
        optimizer="sgd",
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        patience=epochs + 1,
        seed=seed,
        device=device.type,
        weight_decay=0.0,
        label_smoothing=0.0,
    )
    # untimed warm-up on a few batches: allocator, kernels, CUDA context
    k = min(train.n, 3 * batch_size)
    small = Encoded(train.ids[: int(train.offsets[k])], train.offsets[: k + 1], train.labels[:k])
    fit(small, valid, cfg, p.model_copy(update={"epochs": 1}), device)
    result = fit(train, valid, cfg, p, device)
    seconds = epochs * train.tokens / result.tokens_per_s if result.tokens_per_s else float("nan")
    return result.tokens_per_s, result.state.history[-1]["valid_macro_f1"], seconds


# ---------------------------------------------------------------------------------------------
# 3. fastText (optional)


def fasttext_rate(ids, offsets, labels, epochs: int, threads: int) -> tuple[float, float] | None:
    """(tokens/s, train seconds per epoch) of fastText, or None when it is not installed."""
    try:
        import fasttext
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        words = [f"w{i}" for i in range(int(ids.max()) + 1)]
        with path.open("w", encoding="utf-8") as f:
            for i in range(len(labels)):
                doc = ids[offsets[i] : offsets[i + 1]].tolist()
                f.write(f"__label__{labels[i]} " + " ".join(map(words.__getitem__, doc)) + "\n")
        timings = []
        for ep in (1, 1 + epochs):
            t0 = time.perf_counter()
            fasttext.train_supervised(
                str(path),
                dim=EMBED_DIM,
                epoch=ep,
                wordNgrams=1,
                minCount=1,
                thread=threads,
                verbose=0,
            )
            timings.append(time.perf_counter() - t0)
    per_epoch = (timings[1] - timings[0]) / epochs
    if per_epoch <= 0:  # noise swamped the difference: charge the whole 1-epoch run
        per_epoch = timings[0]
    return int(offsets[-1]) / per_epoch, per_epoch


# ---------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=400_000)
    ap.add_argument("--vocab", type=int, default=200_000)
    ap.add_argument("--mean-len", type=float, default=45.0)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the project trainer (and fastText)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (as train.device)")
    ap.add_argument("--batch-sizes", default="8192,32768", help="project trainer batch sizes")
    ap.add_argument(
        "--lr",
        type=float,
        default=3.0,
        help="project SGD lr (batch-mean loss: above ~4 it diverges on this corpus)",
    )
    ap.add_argument("--textbook-seconds", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="50k documents, 8 s of textbook batches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--default-allocator",
        action="store_true",
        help="skip stages.train.tune_allocator (the train stage applies it to its process)",
    )
    args = ap.parse_args(argv)
    # as the train stage runs: applied once, before every variant, so the comparison stays fair
    tuned = False if args.default_allocator else tune_allocator()
    print(f"allocator: {'glibc tuned (stages.train.tune_allocator)' if tuned else 'default'}")
    if args.quick:
        args.docs = 50_000
        args.textbook_seconds = min(args.textbook_seconds, 8.0)
    device = resolve_device(args.device)
    threads = torch.get_num_threads()

    t0 = time.perf_counter()
    ids, offsets, labels = make_corpus(args.docs, args.vocab, args.mean_len, args.seed)
    n_valid = min(10_000, max(1, args.docs // 10))
    n_train = args.docs - n_valid
    train = subset(ids, offsets, labels, 0, n_train)
    valid = subset(ids, offsets, labels, n_train, args.docs)
    tr_ids, tr_off, tr_lab = ids[: offsets[n_train]], offsets[: n_train + 1], labels[:n_train]
    print(
        f"device: {device_name(device)} | torch {torch.__version__} | {threads} threads (os.cpu_count {os.cpu_count()})"
    )
    print(
        f"corpus: {args.docs:,} docs ({n_train:,} train / {n_valid:,} valid), vocab {args.vocab:,}, "
        f"{train.tokens:,} train tokens, mean length {train.tokens / n_train:.1f}, "
        f"dim {EMBED_DIM}, {NUM_CLASSES} classes (built in {time.perf_counter() - t0:.1f} s)"
    )
    sys.stdout.flush()

    base, nb, nd, secs = textbook(tr_ids, tr_off, tr_lab, args.vocab, device, args.textbook_seconds, args.seed)
    print(f"textbook (DataLoader + collate, batch 64, dense SGD): {base / 1e6:.2f} M tok/s = 1.0x textbook")
    print(
        f"  {base:,.0f} tok/s, measured on {nb} batches / {nd:,} docs in {secs:.1f} s; "
        f"a full epoch would take ~{train.tokens / base:.0f} s"
    )
    sys.stdout.flush()

    for bs in (int(b) for b in args.batch_sizes.split(",") if b.strip()):
        rate, f1, secs = project(train, valid, args.vocab, device, bs, args.epochs, args.lr, args.seed)
        print(f"project bag (batch {bs}, sparse SGD): {rate / 1e6:.2f} M tok/s = {rate / base:.1f}x textbook")
        print(
            f"  {args.epochs} epoch(s) in {secs:.1f} s (lr {args.lr:g}), valid macro-F1 {f1:.3f} "
            "(a throughput run: few steps at large batch, not tuned for accuracy)"
        )
        sys.stdout.flush()

    ft = fasttext_rate(tr_ids, tr_off, tr_lab, args.epochs, threads)
    if ft is None:
        print("fastText: not installed (pip install fasttext to compare)")
    else:
        rate, per_epoch = ft
        print(f"fastText ({threads} threads, unigrams): {rate / 1e6:.2f} M tok/s = {rate / base:.1f}x textbook")
        print(f"  {per_epoch:.1f} s per epoch (dictionary build excluded)")


if __name__ == "__main__":
    main()
