"""Suspect labels (textclf.labels, stages/labels.py) and corrections applied by ingest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages import ingest as ingest_stage
from stages import labels as labels_stage
from tests.fixtures import make_docs, project_params, write_text_dir
from textclf import schemas
from textclf.artifacts import read_json, read_parquet
from textclf.data.clean import clean
from textclf.data.ingest import ingest, ingest_chunked
from textclf.data.split import split
from textclf.errors import InputError
from textclf.labels import find_suspects, out_of_fold_proba, read_corrections
from textclf.params import parse_section
from textclf.paths import CORRECTIONS, DOCUMENTS, INGEST_STATS, LABELS_METRICS, SUSPECTS
from textclf.sources import iter_record_batches, read_records
from textclf.text import load_stopwords


def _params(**sections):
    p = project_params()
    for name, values in sections.items():
        p[name].update(values)
    return {s: parse_section(s, p[s]) for s in ("ingest", "clean", "split", "labels")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_text_dir(tmp_path_factory.mktemp("corpus") / "raw", make_docs(1000, seed=3))
    return _params(ingest={"source": str(root)})


def _docs(p, corrections=None) -> pd.DataFrame:
    return ingest(read_records(p["ingest"]), p["ingest"], corrections).documents


def _all_splits(p, docs: pd.DataFrame) -> pd.DataFrame:
    parts, _ = split(clean(docs, p["clean"], load_stopwords(p["clean"])).clean, p["split"])
    return pd.concat([parts[s] for s in schemas.SPLITS], ignore_index=True)


def _flip(df: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(df["split"].to_numpy(dtype=object) == "train")
    chosen = rng.choice(train, size=round(share * len(train)), replace=False)
    y = df["label"].to_numpy(dtype=object).copy()
    y[chosen] = np.where(y[chosen] == "pos", "neg", "pos")
    flipped = np.zeros(len(df), dtype=bool)
    flipped[chosen] = True
    return df.assign(label=pd.Series(y, dtype="str")), flipped


def _corrections(tmp_path, text: str):
    path = tmp_path / "corrections.csv"
    path.write_text(text, encoding="utf-8")
    return path


# --- the queue -----------------------------------------------------------------------------


def test_planted_flips_are_found(corpus):
    docs = _all_splits(corpus, _docs(corpus))
    noisy, flipped = _flip(docs, 0.05, seed=0)
    labels = sorted(set(noisy["label"].tolist()))
    proba = out_of_fold_proba(noisy, labels, corpus["labels"])
    suspects = schemas.validate(find_suspects(noisy, proba, labels), schemas.Suspects, "labels")
    flagged = noisy["doc_id"].isin(set(suspects["doc_id"].tolist())).to_numpy()
    assert flipped.sum() >= 30
    assert (flagged & flipped).sum() / flipped.sum() >= 0.7  # recall
    assert (flagged & flipped).sum() / flagged.sum() >= 0.9  # precision (this fixture has no own noise)
    # the queue is ordered by self-confidence, ranked 1..n, and suggests the other label
    assert suspects["rank"].tolist() == list(range(1, len(suspects) + 1))
    assert suspects["self_confidence"].is_monotonic_increasing
    assert (suspects["suggested"] != suspects["label"]).all()


def test_out_of_fold_means_a_document_never_trains_its_own_prediction(corpus):
    """Folds follow duplicate groups, so a held-out document's copies are held out with it: a
    document whose label is flipped in all its copies still gets the other class."""
    docs = _all_splits(corpus, _docs(corpus))
    labels = sorted(set(docs["label"].tolist()))
    noisy, flipped = _flip(docs, 0.02, seed=1)
    proba = out_of_fold_proba(noisy, labels, corpus["labels"])
    y = np.array([labels.index(c) for c in noisy["label"]])
    assert (proba[flipped].argmax(axis=1) != y[flipped]).mean() >= 0.8
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_reviewed_documents_leave_the_queue(corpus):
    docs = _all_splits(corpus, _docs(corpus))
    noisy, _ = _flip(docs, 0.05, seed=0)
    labels = sorted(set(noisy["label"].tolist()))
    proba = out_of_fold_proba(noisy, labels, corpus["labels"])
    full = find_suspects(noisy, proba, labels)
    reviewed = set(full["doc_id"].head(3).tolist())
    rest = find_suspects(noisy, proba, labels, reviewed)
    assert not reviewed & set(rest["doc_id"].tolist())
    assert rest["doc_id"].tolist() == full["doc_id"].iloc[3:].tolist()
    assert rest["rank"].tolist() == list(range(1, len(rest) + 1))


def test_one_class_or_no_documents_is_an_empty_queue(corpus):
    docs = _all_splits(corpus, _docs(corpus))
    one = docs[docs["label"] == "pos"].reset_index(drop=True)
    for frame, labels in ((one, ["pos"]), (docs.iloc[:0], ["neg", "pos"])):
        proba = out_of_fold_proba(frame, labels, corpus["labels"])
        assert len(schemas.validate(find_suspects(frame, proba, labels), schemas.Suspects, "labels")) == 0


# --- corrections: the file ----------------------------------------------------------------


def test_corrections_file_parses_with_bom_blank_lines_and_optional_columns(tmp_path):
    path = _corrections(tmp_path, "\ufefflabel,doc_id\n\n pos ,0123456789abcdef\n\nneg,fedcba9876543210\n")
    df = read_corrections(path)
    assert df["doc_id"].tolist() == ["0123456789abcdef", "fedcba9876543210"]
    assert df["label"].tolist() == ["pos", "neg"]
    assert df["note"].tolist() == ["", ""]
    assert df.index.tolist() == [3, 5]  # line numbers, for the error messages
    assert read_corrections(tmp_path / "absent.csv").empty


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("doc_id,label\nnot-a-doc-id,pos\n", "line 2: column doc_id"),
        ("doc_id,label\n0123456789abcdef,\n", "line 2: column label"),
        ("doc_id,label\n0123456789abcdef,pos,extra\n", r"line 2: 3 field\(s\)"),
        ("id,label\n0123456789abcdef,pos\n", "line 1: the header must name"),
        ("doc_id,label,colour\n0123456789abcdef,pos,red\n", "line 1: the header must name"),
    ],
)
def test_a_bad_corrections_file_is_an_error_naming_the_line(tmp_path, text, expect):
    with pytest.raises(InputError, match=expect):
        read_corrections(_corrections(tmp_path, text))


def test_a_corrections_file_that_is_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "corrections.csv"
    path.write_bytes("doc_id,label\n0123456789abcdef,好\n".encode("gb18030"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_corrections(path)


# --- corrections: applied by ingest ---------------------------------------------------------


def test_ingest_applies_corrections_last_row_wins(corpus, tmp_path):
    docs = _docs(corpus)
    a, b, c = docs["doc_id"].iloc[:3]
    la, lb, lc = docs["label"].iloc[:3]
    other = {"pos": "neg", "neg": "pos"}
    path = _corrections(
        tmp_path,
        f"doc_id,label,note,reviewer\n{a},{other[la]},first,x\n{a},{la},changed my mind,x\n"
        f"{b},{other[lb]},,y\n{c},{lc},accepted,z\n",
    )
    result = ingest(read_records(corpus["ingest"]), corpus["ingest"], read_corrections(path))
    got = result.documents.set_index("doc_id")["label"]
    assert got[a] == la and got[b] == other[lb] and got[c] == lc
    assert result.stats["relabelled"] == 1 and result.stats["reviewed"] == 3
    # the rest is untouched, and the accounting still holds
    assert (result.documents["label"] != docs["label"]).sum() == 1
    s = result.stats
    assert s["read"] == s["kept"] + s["duplicates"] + s["quarantined"]
    assert sum(s["by_label"].values()) == s["kept"]


def test_chunked_ingest_applies_the_same_corrections(corpus, tmp_path):
    docs = _docs(corpus)
    first, last = docs.iloc[0], docs.iloc[-1]
    other = {"pos": "neg", "neg": "pos"}
    path = _corrections(
        tmp_path, f"doc_id,label\n{first.doc_id},{other[first.label]}\n{last.doc_id},{other[last.label]}\n"
    )
    corrections = read_corrections(path)
    whole = ingest(read_records(corpus["ingest"]), corpus["ingest"], corrections)
    written = []
    stats = ingest_chunked(
        iter_record_batches(corpus["ingest"], 97),
        corpus["ingest"],
        tmp_path / "spill.parquet",
        lambda d, r: written.append(d),
        None,
        corrections,
    )
    chunked = pd.concat(written, ignore_index=True)
    pd.testing.assert_frame_equal(chunked, whole.documents)
    assert stats == whole.stats and stats["relabelled"] == 2


@pytest.mark.parametrize(
    ("row", "expect"),
    [
        ("0123456789abcdef,pos", r"line 3: doc_id 0123456789abcdef is not an ingested document"),
        ("{doc},maybe", r"line 3: label 'maybe' is not a label of the corpus \(neg, pos\)"),
    ],
)
def test_unknown_doc_id_or_label_is_an_error_naming_the_row(corpus, tmp_path, row, expect):
    doc = _docs(corpus)["doc_id"].iloc[5]
    path = _corrections(tmp_path, f"doc_id,label\n{doc},pos\n{row.format(doc=doc)}\n")
    with pytest.raises(InputError, match=expect):
        ingest(read_records(corpus["ingest"]), corpus["ingest"], read_corrections(path))


def test_ingest_stage_with_a_bad_corrections_file_exits_5_and_loses_nothing(corpus, tmp_path, monkeypatch):
    root = tmp_path / "project"
    write_text_dir(root / "data" / "raw", make_docs(200, seed=4))
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text("ingest:\n  source: data/raw\n", encoding="utf-8")
    CORRECTIONS.parent.mkdir(parents=True)
    CORRECTIONS.write_text("doc_id,label\n", encoding="utf-8")
    ingest_stage.main()
    before = {p: p.read_bytes() for p in (DOCUMENTS, INGEST_STATS)}
    bad = "doc_id,label,note\n0123456789abcdef,pos,typo in the id\n"
    CORRECTIONS.write_text(bad, encoding="utf-8")
    with pytest.raises(SystemExit) as err:
        ingest_stage.main()
    assert err.value.code == 5
    assert CORRECTIONS.read_text(encoding="utf-8") == bad  # the user's file, untouched
    assert {p: p.read_bytes() for p in before} == before  # the previous outputs, whole


def test_labels_stage_writes_the_queue_and_metrics(corpus, tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    docs = _all_splits(corpus, _docs(corpus))
    noisy, flipped = _flip(docs, 0.05, seed=2)
    from textclf.artifacts import write_parquet
    from textclf.paths import PROCESSED

    for s in schemas.SPLITS:
        write_parquet(noisy[noisy["split"] == s].reset_index(drop=True), PROCESSED / f"{s}.parquet")
    reviewed = noisy["doc_id"][flipped].iloc[0]
    CORRECTIONS.parent.mkdir(parents=True)
    CORRECTIONS.write_text(f"doc_id,label\n{reviewed},pos\n", encoding="utf-8")
    (root / "params.yaml").write_text("labels:\n  folds: 4\n", encoding="utf-8")
    labels_stage.main()
    queue = read_parquet(SUSPECTS)
    metrics = read_json(LABELS_METRICS)
    assert reviewed not in set(queue["doc_id"])
    assert metrics["suspects"] == len(queue) > 0 and metrics["reviewed"] == 1
    assert sum(metrics["by_split"].values()) == len(queue) == sum(metrics["by_pair"].values())
    assert set(metrics["by_pair"]) <= {"pos -> neg", "neg -> pos"}
