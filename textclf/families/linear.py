"""The `linear` family: full-rank linear classifiers over the document's TF-IDF vector
(`LinearModel`), fitted by full-batch L-BFGS on the train split's sparse TF-IDF matrix; its
ONNX graph (`LinearGraph`); its autotune space. Params: `train.linear.*` (textclf.params.LinearParams).

Both heads minimise scikit-learn's LogisticRegression objective, mean loss + ||W||² / (2·C·n)
(with two classes the LR head's softmax over two rows pays half the penalty of scikit-learn's
one binary vector: C here is its C / 2): the LR head a multinomial cross-entropy over the
TF-IDF vectors, the NB head one-vs-rest binary
losses over the same vectors scaled per class by naive-Bayes log-count ratios (NBSVM). The
gradients are written out by hand over a CSR matrix and its transpose: one sparse product each
way per evaluation, ~30x faster on CPU than autograd through `embedding_bag`. The problem is
convex, the iterations deterministic, and the result does not depend on a seed.

Nothing here imports DVC, DVCLive or Prefect: benchmarks and GPU checks call it directly.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from textclf.families.base import ModelFamily
from textclf.model import ModelConfig, doc_index, idf_weights

if TYPE_CHECKING:
    from textclf.params import TrainParams
    from textclf.training.loop import Encoded, FitResult

log = logging.getLogger("textclf.train")


# ---------------------------------------------------------------------------------------------
# the module


class LinearModel(nn.Module):
    """Full-rank linear classifiers over the document's TF-IDF vector, as scikit-learn's
    TfidfVectorizer(sublinear_tf=True) + LogisticRegression compute it, plus a second head whose
    weights were fitted on naive-Bayes log-count-ratio-scaled features (NBSVM, Wang & Manning
    2012). The two make different errors; their probabilities are averaged with weight `nb_mix`.

    The TF-IDF vector is computed from (ids, offsets) inside the model — term counts per document,
    1 + log(tf), the train split's IDF, L2 normalisation — so prediction, evaluation and the ONNX
    graph take the same input as every other family. `<pad>` and `<unk>` carry no weight.
    `forward` returns log-probabilities: softmax of them is the averaged distribution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        v, k = cfg.num_embeddings, cfg.num_classes
        self.register_buffer("idf", torch.ones(v))
        self.lr_weight = nn.Parameter(torch.zeros(v, k))
        self.lr_bias = nn.Parameter(torch.zeros(k))
        self.nb_weight = nn.Parameter(torch.zeros(v, k))
        self.nb_bias = nn.Parameter(torch.zeros(k))

    def term_weights(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Per-id weights whose sum over a document's copies of an id is its TF-IDF value."""
        return tfidf_weights(ids, offsets, self.idf, self.cfg.sublinear_tf)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra`: logits [batch, classes] added to the LR head's (the encoder family's embedding term)."""
        w = self.term_weights(ids, offsets)
        mix = self.cfg.nb_mix
        lr = nn.functional.embedding_bag(ids, self.lr_weight, offsets, mode="sum", per_sample_weights=w) + self.lr_bias
        if extra is not None:
            lr = lr + extra
        if mix == 0:
            return lr
        nb = nn.functional.embedding_bag(ids, self.nb_weight, offsets, mode="sum", per_sample_weights=w) + self.nb_bias
        if mix == 1:
            return nb
        return torch.log(((1 - mix) * torch.softmax(lr, 1) + mix * torch.softmax(nb, 1)).clamp_min(1e-30))


def tfidf_weights(ids: torch.Tensor, offsets: torch.Tensor, idf: torch.Tensor, sublinear: bool = True) -> torch.Tensor:
    """Per-id weights w such that summing w over a document's copies of id i gives its TF-IDF
    value (1 + log tf_i) * idf_i / ||.||_2 (or tf_i * idf_i). Ids 0 and 1 (<pad>, <unk>) get 0."""
    if len(ids) == 0:
        return torch.zeros(0, device=ids.device)
    doc = doc_index(offsets, len(ids))
    key = doc * idf.shape[0] + ids
    if len(offsets) * idf.shape[0] < 2**31:  # half the bytes to sort; the same unique
        key = key.to(torch.int32)
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    tf = counts[inverse].to(idf.dtype)
    value = ((1 + torch.log(tf)) if sublinear else tf) * idf[ids] * (ids > 1).to(idf.dtype)
    sq = torch.zeros(len(offsets), device=ids.device, dtype=idf.dtype).index_add_(0, doc, value * value / tf)
    return value / tf / torch.sqrt(sq).clamp_min(1e-12)[doc]


# ---------------------------------------------------------------------------------------------
# the fit


@dataclass(frozen=True)
class LinearFit:
    state_dict: dict[str, torch.Tensor]
    train_loss: float
    iterations: int
    seconds: float
    converged: bool
    dense_weight: torch.Tensor | None = None  # the LR head's weights of the extra dense features


@dataclass(frozen=True)
class TfidfMatrix:
    """The TF-IDF rows of a split as CSR (n × V) and its transpose, plus the (doc, id) pairs."""

    x: torch.Tensor
    xt: torch.Tensor
    doc: torch.Tensor
    col: torch.Tensor


def tfidf_matrix(ids: torch.Tensor, offsets: torch.Tensor, idf: torch.Tensor, sublinear: bool = True) -> TfidfMatrix:
    """`ids`/`offsets` as from textclf.model.encode (offsets with the final end, n + 1 entries)."""
    n, v = len(offsets) - 1, idf.shape[0]
    device = ids.device
    keep = ids > 1  # <pad>, <unk>
    doc = doc_index(offsets[:-1], len(ids))[keep]
    key, counts = torch.unique(doc * v + ids[keep], return_counts=True)  # sorted: by doc, then id
    d, c = key // v, key % v
    tf = counts.to(idf.dtype)
    val = ((1 + torch.log(tf)) if sublinear else tf) * idf[c]
    norm = torch.sqrt(torch.zeros(n, device=device, dtype=idf.dtype).index_add_(0, d, val * val)).clamp_min(1e-12)
    val = val / norm[d]
    order = torch.argsort(c * n + d)
    with warnings.catch_warnings():  # "CSR support is in beta": CSR x dense products are all we use
        warnings.simplefilter("ignore", UserWarning)
        x = torch.sparse_csr_tensor(_crow(d, n), c, val, (n, v), check_invariants=False)
        xt = torch.sparse_csr_tensor(_crow(c, v), d[order], val[order], (v, n), check_invariants=False)
    return TfidfMatrix(x, xt, d, c)


def _crow(rows: torch.Tensor, n: int) -> torch.Tensor:
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow


def nb_ratios(m: TfidfMatrix, y: torch.Tensor, num_classes: int, alpha: float = 1.0) -> torch.Tensor:
    """[V, K] log-count ratios log((p_k/|p_k|) / (q_k/|q_k|)) of binarised features: p_k the
    document frequencies in class k plus alpha, q_k those in the other classes plus alpha."""
    v = m.x.shape[1]
    df = torch.zeros(num_classes, v, device=y.device).index_put_(
        (y[m.doc], m.col), torch.ones_like(m.col, dtype=torch.float32), accumulate=True
    )
    p = df + alpha
    q = df.sum(0, keepdim=True) - df + alpha
    return torch.log((p / p.sum(1, keepdim=True)) / (q / q.sum(1, keepdim=True))).T.contiguous()


def sample_weights(y: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor:
    """Per-document loss weights with mean 1: `balanced` weighs classes inversely to their size."""
    if mode == "none":
        return torch.ones(len(y), device=y.device)
    counts = torch.bincount(y, minlength=num_classes).float().clamp_min(1)
    w = (counts.sum() / (num_classes * counts))[y]
    return w / w.mean()


def _lbfgs(
    m: TfidfMatrix,
    y: torch.Tensor,
    num_classes: int,
    c: float,
    sw: torch.Tensor,
    scale: torch.Tensor | None,
    ovr: bool,
    max_iter: int,
    deadline: float | None,
    dense: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int, bool, torch.Tensor | None]:
    """min over (U, b) of  Σ sw·loss / n + ||U||² / (2·c·n), logits = X (U ⊙ scale) + b;
    with `dense` [n, H] (the encoder family's embeddings) logits gain dense · U_d, and U_d pays
    the same L2 penalty."""
    n, v = m.x.shape
    dev = y.device
    u = torch.zeros(v, num_classes, device=dev, requires_grad=True)
    b = torch.zeros(num_classes, device=dev, requires_grad=True)
    ud = torch.zeros(dense.shape[1] if dense is not None else 0, num_classes, device=dev, requires_grad=True)
    target = nn.functional.one_hot(y, num_classes).float()
    opt = torch.optim.LBFGS(
        [u, b] if dense is None else [u, b, ud],
        lr=1,
        max_iter=25,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-5,
        tolerance_change=1e-9,
    )

    def closure():
        with torch.no_grad():
            w = u * scale if scale is not None else u
            z = m.x @ w + b
            if dense is not None:
                z = z + dense @ ud
            if ovr:
                p = torch.sigmoid(z)
                loss = (sw[:, None] * nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")).sum()
            else:
                logp = torch.log_softmax(z, 1)
                p = logp.exp()
                loss = -(sw * (target * logp).sum(1)).sum()
            g = sw[:, None] * (p - target) / n
            gw = m.xt @ g
            u.grad = (gw * scale if scale is not None else gw) + u.detach() / (c * n)
            b.grad = g.sum(0)
            if dense is not None:
                ud.grad = dense.T @ g + ud.detach() / (c * n)
                return loss / n + ((u * u).sum() + (ud * ud).sum()) / (2 * c * n)
            return loss / n + (u * u).sum() / (2 * c * n)

    iters, converged, loss = 0, False, float("nan")
    while iters < max_iter:
        before = opt.state[u].get("n_iter", 0) if u in opt.state else 0
        loss = float(opt.step(closure))
        done = opt.state[u]["n_iter"] - before
        iters += done
        if done < opt.defaults["max_iter"]:  # L-BFGS stopped on its tolerances: converged
            converged = True
            break
        if deadline is not None and time.monotonic() > deadline:
            break
    w = (u * scale if scale is not None else u).detach()
    return w, b.detach(), loss, iters, converged, ud.detach() if dense is not None else None


def fit_linear(
    ids: torch.Tensor,
    offsets: torch.Tensor,
    y: torch.Tensor,
    cfg: ModelConfig,
    c: float,
    class_weight: str = "none",
    nb_alpha: float = 1.0,
    max_iter: int = 300,
    deadline: float | None = None,
    dense: torch.Tensor | None = None,
) -> LinearFit:
    """Fit both heads of a `LinearModel` on one split (ids/offsets/y on the training device);
    `dense` [n, H]: extra features of the LR head (scaled as the model scales them)."""
    t0 = time.perf_counter()
    k = cfg.num_classes
    idf = idf_weights(ids.cpu(), offsets.cpu(), cfg.num_embeddings).to(ids.device)
    m = tfidf_matrix(ids, offsets, idf, cfg.sublinear_tf)
    sw = sample_weights(y, k, class_weight)
    model = LinearModel(cfg).to(ids.device)
    total_loss, iters, converged, dense_weight = 0.0, 0, True, None
    with torch.no_grad():
        model.idf.copy_(idf)
    if cfg.nb_mix < 1:
        w, b, loss, it, conv, dense_weight = _lbfgs(m, y, k, c, sw, None, False, max_iter, deadline, dense)
        with torch.no_grad():
            model.lr_weight.copy_(w)
            model.lr_bias.copy_(b)
        total_loss, iters, converged = total_loss + loss, iters + it, converged and conv
    if cfg.nb_mix > 0:
        # the one-vs-rest loss counts every document once per class: C/2 keeps the two heads'
        # regularisation comparable on two classes (where both heads see the same decision)
        w, b, loss, it, conv, _ = _lbfgs(m, y, k, c / 2, sw, nb_ratios(m, y, k, nb_alpha), True, max_iter, deadline)
        with torch.no_grad():
            model.nb_weight.copy_(w)
            model.nb_bias.copy_(b)
        total_loss, iters, converged = total_loss + loss, iters + it, converged and conv
    state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    return LinearFit(state, total_loss, iters, time.perf_counter() - t0, converged, dense_weight)


def fit_with_params(
    train: Encoded, cfg: ModelConfig, p: TrainParams, deadline: float | None = None, dense: torch.Tensor | None = None
) -> LinearFit:
    """`fit_linear` on a split with the train.linear.* settings (the linear family, and the
    encoder family's frozen head with its embeddings as `dense`)."""
    return fit_linear(
        train.ids,
        train.offsets,
        train.labels,
        cfg,
        p.linear.C,
        p.class_weight,
        p.linear.nb_alpha,
        p.linear.max_iter,
        deadline,
        dense=dense,
    )


def one_fit_result(
    what: str,
    model: nn.Module,
    fitted: LinearFit,
    val: dict,
    tokens: int,
    on_epoch: Callable[[dict], None] | None = None,
    deadline: float | None = None,
) -> FitResult:
    """A convex fit as the epoch loop's result: its one record logged as epoch 1 (so the logs,
    checkpoints and bundle look like every other family's), the model's weights, the throughput;
    cut when a deadline stopped L-BFGS before it converged."""
    rec = {
        "epoch": 1,
        "train_loss": fitted.train_loss,
        "valid_loss": val["loss"],
        "valid_accuracy": val["accuracy"],
        "valid_macro_f1": val["macro_f1"],
        "lr": 0.0,
    }
    log.info(
        "%s: %d L-BFGS iterations%s in %.1f s; valid loss %.4f, acc %.4f, macro-F1 %.4f",
        what,
        fitted.iterations,
        "" if fitted.converged else " (not converged)",
        fitted.seconds,
        val["loss"],
        val["accuracy"],
        val["macro_f1"],
    )
    if on_epoch:
        on_epoch(rec)
    from textclf.training.checkpoint import TrainState
    from textclf.training.loop import FitResult

    state = TrainState(
        epoch=1,
        step=fitted.iterations,
        best_f1=val["macro_f1"],
        best_epoch=1,
        history=[rec],
        done=True,
    )
    best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cut = not fitted.converged and deadline is not None and time.monotonic() >= deadline
    return FitResult(best, state, tokens / fitted.seconds if fitted.seconds else 0.0, cut=cut)


def _fit_family(
    train: Encoded,
    valid: Encoded,
    cfg: ModelConfig,
    p: TrainParams,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None = None,
    deadline: float | None = None,
) -> FitResult:
    """The `linear` family's training: one convex fit, no epochs."""
    fitted = fit_with_params(train.to(device), cfg, p, deadline)
    from textclf.training.loop import evaluate

    model = LinearModel(cfg).to(device)
    model.load_state_dict(fitted.state_dict)
    val = evaluate(model, valid.to(device), None, amp=None)
    return one_fit_result("linear", model, fitted, val, train.tokens, on_epoch, deadline)


# ---------------------------------------------------------------------------------------------
# export


class LinearGraph(nn.Module):
    """`LinearModel` + softmax over the document-term count matrix in CSR form: `ids` (each
    document's distinct ids), `offsets` (each document's start), `counts` (how often each id
    occurs in its document; `textclf.onnx_runtime.term_counts` builds the three from encoded
    documents). The TF-IDF value per entry, a Gather of both heads' rows from one [V, 2K] table
    (the NB-scaled head and the LR head folded side by side at export), and the per-document sums
    of the rows and of the squared values as differences of one float64 running sum (as BagGraph);
    the L2 norm divides the pooled logits, not every entry. No Unique, no per-document loop."""

    def __init__(self, model: LinearModel):
        super().__init__()
        self.cfg = model.cfg
        idf = model.idf.detach().clone()
        idf[:2] = 0  # <pad>, <unk> carry no weight
        self.idf = nn.Parameter(idf, requires_grad=False)
        # one table [V, 2K]: a gather per id serves both heads
        self.table = nn.Parameter(
            torch.cat([model.lr_weight, model.nb_weight], 1).detach().clone(), requires_grad=False
        )
        self.bias = nn.Parameter(torch.cat([model.lr_bias, model.nb_bias]).detach().clone(), requires_grad=False)
        self.mix = model.cfg.nb_mix

    def forward(
        self, ids: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`extra`: logits added to the LR head's (the encoder family's embedding term)."""
        k = self.cfg.num_classes
        ends = torch.cat([offsets[1:], torch.ones(1, dtype=torch.int64) * ids.shape[0]])
        value = ((1 + torch.log(counts)) if self.cfg.sublinear_tf else counts) * self.idf[ids]
        cols = torch.cat([(value * value)[:, None], self.table[ids] * value[:, None]], 1)
        cs = torch.cumsum(torch.cat([torch.zeros(1, 2 * k + 1), cols]).double(), 0)
        sums = (cs[ends] - cs[offsets]).float()
        logits = sums[:, 1:] / torch.sqrt(sums[:, :1]).clamp_min(1e-12) + self.bias
        if extra is not None:
            logits = torch.cat([logits[:, :k] + extra, logits[:, k:]], 1)
        lr, nb = torch.softmax(logits[:, :k], dim=1), torch.softmax(logits[:, k:], dim=1)
        return (1 - self.mix) * lr + self.mix * nb


def onnx_example(model: LinearModel) -> tuple[tuple, list[str], dict]:
    """Trace inputs of a `LinearGraph` (two documents, the CSR of their counts) and the axes."""
    k = min(8, model.cfg.num_embeddings)
    args = (
        torch.arange(k, dtype=torch.int64),
        torch.tensor([0, k // 2], dtype=torch.int64),
        torch.arange(1, k + 1, dtype=torch.float32),
    )
    axes = {"ids": {0: "ids"}, "offsets": {0: "batch"}, "counts": {0: "ids"}, "probs": {0: "batch"}}
    return args, ["ids", "offsets", "counts"], axes


# ---------------------------------------------------------------------------------------------


class LinearFamily(ModelFamily):
    name = "linear"

    def model_config(self, p: TrainParams, num_embeddings: int, num_classes: int) -> ModelConfig:
        return ModelConfig(
            type="linear",
            num_embeddings=num_embeddings,
            embed_dim=0,
            num_classes=num_classes,
            nb_mix=p.linear.nb_mix,
            sublinear_tf=p.linear.sublinear_tf,
        )

    def build(self, cfg: ModelConfig, sparse: bool = False, encoder: dict | None = None) -> nn.Module:
        return LinearModel(cfg)

    def train(self, data, p: TrainParams, device: torch.device, *, on_epoch=None, deadline=None, **_):
        tr, va, cfg, _, _ = data.get(p)
        return _fit_family(tr, va, cfg, p, device, on_epoch, deadline), cfg, None

    def reports_once(self, p: TrainParams, device: torch.device) -> bool:
        return True

    def suggest(self, trial, p: TrainParams, num, cat) -> dict[str, Any]:
        # Optuna names carry the family where the choices differ by family (`linear:bigrams`)
        return {
            "linear.C": num("linear.C", 0.25, 64.0, p.linear.C),
            "linear.nb_mix": cat("linear.nb_mix", [0.0, 0.25, 0.5, 0.75, 1.0], p.linear.nb_mix),
            "linear.sublinear_tf": cat("linear.sublinear_tf", [True, False], p.linear.sublinear_tf),
            "bigrams": cat("linear:bigrams", ["vocab", "none"], p.bigrams),
        }

    def as_written(self, p: TrainParams) -> dict[str, Any]:
        return {
            "linear.C": p.linear.C,
            "linear.nb_mix": p.linear.nb_mix,
            "linear.sublinear_tf": p.linear.sublinear_tf,
            "linear:bigrams": p.bigrams,
        }

    def graph(self, model: nn.Module) -> nn.Module:
        return LinearGraph(model)

    def example(self, model: nn.Module) -> tuple[tuple, list[str], dict]:
        return onnx_example(model)

    def onnx_proba(self, runner, ids, offsets, batch_size: int, lists=None) -> np.ndarray:
        from textclf.onnx_runtime import run_bags, term_counts

        ids, offsets, counts = term_counts(ids, offsets)
        return run_bags(runner.session, ids, offsets, len(runner.labels), batch_size, counts=counts)


FAMILY = LinearFamily()
