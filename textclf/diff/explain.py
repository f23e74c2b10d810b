"""Why did the test metric move between two revisions: the test set, or the model?

With M a revision's model and T its test split (documents and labels):

  total     M_B(T_B) − M_A(T_A)   the change of the committed test metric
  test_set  M_A(T_B) − M_A(T_A)   A's model scored on B's test documents, against A's own
  model     M_B(T_B) − M_A(T_B)   B's model against A's, on the same documents (B's)

so total = test_set + model exactly. M_A(T_B) needs A's predictions on B's test documents: those
A also had in its test split are in A's predictions (a doc_id is the hash of the text); the rest
are predicted by A's bundle, read at A's commit. `test_changes` splits `test_set` over the test
documents removed, relabelled and added, in that order (each step's change of A's score: the
three add up to `test_set`). `flips` count the test documents of both revisions with the same
label that A got wrong and B right (`fixed`) or the reverse (`broken`); each example names its
likely `causes`: the training documents added, removed or relabelled between A and B that are
nearest to it (cosine over TF-IDF of the cleaned tokens).

Pure: frames and a predict function in, a dict out (textclf.diff.read reads the revisions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from textclf.diff.core import snippet

METRICS = ("macro_f1", "accuracy")


def score(truth, predicted, metric: str) -> float | None:
    """As the evaluate stage: accuracy, or macro-F1 over the classes that occur."""
    from sklearn.metrics import accuracy_score, f1_score

    y, p = np.asarray(truth, dtype=object).astype(str), np.asarray(predicted, dtype=object).astype(str)
    if not len(y):
        return None
    if metric == "accuracy":
        return float(accuracy_score(y, p))
    return float(f1_score(y, p, average="macro", labels=sorted(set(y) | set(p)), zero_division=0))


def explain(
    a_preds: pd.DataFrame,
    b_preds: pd.DataFrame,
    b_texts: pd.Series,
    predict_a: Callable[[list[str]], np.ndarray] | None,
    a_train: pd.DataFrame,
    b_train: pd.DataFrame,
    b_test_tokens: pd.Series,
    metric: str = "macro_f1",
    examples: int = 5,
    causes: int = 3,
    relabelled: pd.DataFrame | None = None,
) -> dict:
    """`a_preds` / `b_preds`: each revision's test predictions (doc_id, label, predicted);
    `b_texts`: B's document texts by doc_id; `predict_a`: A's model, texts → labels (None: not
    readable); `a_train` / `b_train`: each revision's train split (doc_id, label, tokens);
    `b_test_tokens`: B's test tokens by doc_id; `relabelled`: the corpus documents whose label
    changed (doc_id, was, label), so that one that also left or joined the train split counts as
    relabelled, not as removed or added."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    out: dict = {"metric": f"test.{metric}"}
    m_aa = score(a_preds["label"], a_preds["predicted"], metric)
    m_bb = score(b_preds["label"], b_preds["predicted"], metric)
    out["a"], out["b"] = m_aa, m_bb
    if m_aa is None or m_bb is None:
        out["error"] = "an empty test split: nothing to explain"
        return out
    out["total"] = m_bb - m_aa

    a_pred = a_preds.set_index("doc_id")["predicted"]
    a_label = a_preds.set_index("doc_id")["label"]
    b = b_preds.set_index("doc_id")
    known = b.index.isin(a_pred.index)
    pred_a_on_b = pd.Series(a_pred.reindex(b.index).to_numpy(dtype=object), index=b.index)
    missing = b.index[~known]
    out["predicted_by_a"] = int(len(missing))
    if len(missing):
        if predict_a is None:
            out["error"] = (
                f"{len(missing):,} of B's test documents are not in A's test split, and A's model "
                "could not be read to predict them"
            )
            return out
        pred_a_on_b.loc[missing] = predict_a(b_texts.reindex(missing).fillna("").tolist())
    m_ab = score(b["label"], pred_a_on_b, metric)
    out["test_set"] = m_ab - m_aa
    out["model"] = m_bb - m_ab
    out["a_on_b"] = m_ab

    # the test split's changes, attributed in order: removed, relabelled, added
    removed = a_label.index[~a_label.index.isin(b.index)]
    both = a_label.index[a_label.index.isin(b.index)]
    test_relabelled = both[_differs(a_label[both], b.loc[both, "label"])]
    added = missing.union(b.index[known & ~b.index.isin(a_label.index)])
    kept = a_label.drop(removed)
    s1 = score(kept, a_pred.loc[kept.index], metric)
    relabel = kept.copy()
    relabel.loc[test_relabelled] = b.loc[test_relabelled, "label"]
    s2 = score(relabel, a_pred.loc[relabel.index], metric)
    out["test_changes"] = {
        "removed": {"documents": int(len(removed)), "share": _delta(s1, m_aa)},
        "relabelled": {"documents": int(len(test_relabelled)), "share": _delta(s2, s1)},
        "added": {"documents": int(len(added)), "share": _delta(m_ab, s2)},
    }

    # flips on the documents both revisions tested with the same label
    same = both.difference(test_relabelled)
    truth = b.loc[same, "label"].astype(str)
    before, after = a_pred.loc[same].astype(str), b.loc[same, "predicted"].astype(str)
    fixed = same[(before != truth).to_numpy() & (after == truth).to_numpy()]
    broken = same[(before == truth).to_numpy() & (after != truth).to_numpy()]
    out["flips"] = {"fixed": int(len(fixed)), "broken": int(len(broken))}

    changes = train_changes(a_train, b_train, relabelled)
    out["train_changes"] = {k: int((changes["change"] == k).sum()) for k in ("added", "removed", "relabelled")}
    chosen = [*broken[:examples], *fixed[: max(0, examples - len(broken))]]
    nearest = nearest_changes(b_test_tokens.reindex(chosen), changes, causes)
    out["examples"] = [
        {
            "doc_id": str(d),
            "label": str(b.loc[d, "label"]),
            "before": str(a_pred[d]),
            "after": str(b.loc[d, "predicted"]),
            "flip": "broken" if d in broken else "fixed",
            "text": snippet(str(b_texts.get(d, "") or "")),
            "causes": nearest.get(d, []),
        }
        for d in chosen
    ]
    return out


def _differs(x: pd.Series, y: pd.Series) -> np.ndarray:
    """Element-wise x != y as a plain bool array (whatever the string dtype)."""
    return np.asarray(x.astype(str).to_numpy() != y.astype(str).to_numpy(), dtype=bool)


def _delta(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def train_changes(a_train: pd.DataFrame, b_train: pd.DataFrame, relabelled: pd.DataFrame | None = None) -> pd.DataFrame:
    """The training documents added, removed or relabelled from A to B: doc_id, change, label
    (B's; A's for a removed one), was (A's label of a relabelled one), tokens. A document of the
    corpus relabelled between A and B (`relabelled`: doc_id, was, label) that is in either train
    split is `relabelled`, even when the new label moved it out of or into the train split."""
    a = a_train.set_index("doc_id")
    b = b_train.set_index("doc_id")
    rel = pd.Index([]) if relabelled is None else pd.Index(relabelled["doc_id"])
    both = b.index[b.index.isin(a.index)]
    rel_train = both[_differs(a.loc[both, "label"], b.loc[both, "label"])]
    rel_all = rel_train.union(rel[rel.isin(a.index) | rel.isin(b.index)])
    added = b.loc[~b.index.isin(a.index) & ~b.index.isin(rel_all)]
    removed = a.loc[~a.index.isin(b.index) & ~a.index.isin(rel_all)]
    tokens = pd.concat([a["tokens"], b["tokens"]])
    tokens = tokens[~tokens.index.duplicated()]
    was = pd.concat([a["label"], (relabelled.set_index("doc_id")["was"] if relabelled is not None else None)])
    now = pd.concat([b["label"], (relabelled.set_index("doc_id")["label"] if relabelled is not None else None)])
    was, now = was[~was.index.duplicated()], now[~now.index.duplicated(keep="last")]
    moved = pd.DataFrame(
        {
            "change": "relabelled",
            "label": now.reindex(rel_all).to_numpy(),
            "was": was.reindex(rel_all).to_numpy(),
            "tokens": tokens.reindex(rel_all).to_numpy(),
        },
        index=rel_all,
    )
    parts = [added.assign(change="added", was=None), removed.assign(change="removed", was=None), moved]
    frame = pd.concat(parts)[["change", "label", "was", "tokens"]]
    return frame.rename_axis("doc_id").reset_index()


def nearest_changes(queries: pd.Series, changes: pd.DataFrame, k: int) -> dict[str, list[dict]]:
    """For each query document (its tokens, by doc_id), the `k` changed training documents most
    similar to it: cosine over TF-IDF (1–2-grams of the cleaned tokens, fitted on both sets)."""
    queries = queries.dropna()
    if not len(queries) or not len(changes) or k <= 0:
        return {}
    from textclf.text import token_tfidf

    vec = token_tfidf(max_features=200_000)
    joined = [" ".join(t) for t in changes["tokens"]] + [" ".join(t) for t in queries]
    try:
        x = vec.fit_transform(joined)
    except ValueError:  # no tokens at all
        return {}
    c, q = x[: len(changes)], x[len(changes) :]
    sims = (q @ c.T).toarray()  # rows are L2-normalised: cosine
    out = {}
    for row, doc_id in enumerate(queries.index):
        top = np.argsort(-sims[row], kind="stable")[:k]
        out[doc_id] = [
            {
                "doc_id": str(changes["doc_id"].iloc[j]),
                "change": changes["change"].iloc[j],
                "label": str(changes["label"].iloc[j]),
                **({"was": str(changes["was"].iloc[j])} if changes["change"].iloc[j] == "relabelled" else {}),
                "similarity": round(float(sims[row, j]), 4),
            }
            for j in top
            if sims[row, j] > 0
        ]
    return out
