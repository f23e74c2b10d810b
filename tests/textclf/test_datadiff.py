"""`textclf diff`: the pure core on inline frames, then the command on a real temp repo.

The repo test builds a git + DVC project with a local-directory remote, commits version 1 of a
small corpus with its outputs (`dvc repro vocab`, `dvc push`), then removes, relabels and adds
known documents (plus three records that end up quarantined), reruns and commits version 2. Every
count asserted below is known from how the corpus was edited, not read back from the tool.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dvc.repo import Repo

from tests.fixtures import make_repo, run
from textclf.cli import main
from textclf.diff.core import DiffError, Snapshot, diff_snapshots
from textclf.diff.read import dvc_changes
from textclf.diff.render import markdown_diff, render_markdown, render_text
from textclf.text import hash64, normalize, to_hex

# =============================================================================================
# the core on inline frames


def _snap(rev, docs, splits, reasons, tokens, counts=None, test_tokens=None):
    docs = pd.DataFrame(docs, columns=["doc_id", "label", "text"])
    splits = pd.DataFrame(splits, columns=["doc_id", "split"])
    vocab = {
        "tokens": ["<pad>", "<unk>", *tokens],
        "counts": [0, 0, *(counts or [1] * len(tokens))],
        "hash": f"h-{rev}",
    }
    tt = None if test_tokens is None else pa.array(test_tokens, type=pa.list_(pa.string()))
    return Snapshot(
        rev=rev,
        documents=docs,
        splits=splits,
        quarantine=pd.DataFrame({"reason": pd.Series(reasons, dtype=object)}),
        vocab=vocab,
        test_tokens=tt,
    )


A = _snap(
    "a",
    docs=[
        ("d1", "pos", "one"),
        ("d2", "pos", "two"),
        ("d3", "neg", "three"),
        ("d4", "neg", "four"),
    ],
    splits=[("d1", "train"), ("d2", "train"), ("d3", "valid"), ("d4", "test")],
    reasons=["empty", "empty", "marker"],
    tokens=["good", "bad", "old"],
    counts=[5, 4, 3],
)
B = _snap(
    "b",
    docs=[
        ("d2", "neg", "two"),
        ("d3", "neg", "three"),
        ("d4", "neg", "four"),
        ("d5", "pos", "five"),
        ("d6", "pos", "six"),
    ],
    splits=[("d2", "train"), ("d3", "test"), ("d4", "test"), ("d5", "train"), ("d6", "valid")],
    reasons=["empty", "too_long", "empty_after_cleaning"],
    tokens=["good", "bad", "new", "newer"],
    counts=[6, 4, 2, 7],
    test_tokens=[["good", "new", "zzz"], ["bad", "newer"]],
)


def test_core_counts_every_change_once():
    d = diff_snapshots(A, B, examples=10)
    assert {k: d["documents"][k] for k in ("a", "b", "added", "removed", "relabeled", "unchanged")} == {
        "a": 4,
        "b": 5,
        "added": 2,
        "removed": 1,
        "relabeled": 1,
        "unchanged": 2,
    }
    ex = d["documents"]["examples"]
    assert [e["doc_id"] for e in ex["added"]] == ["d5", "d6"]
    assert ex["removed"] == [{"doc_id": "d1", "label": "pos", "text": "one"}]
    assert ex["relabeled"] == [{"doc_id": "d2", "label": "neg", "text": "two", "label_a": "pos"}]
    assert d["labels"] == {
        "neg": {"a": 2, "b": 3, "delta": 1, "share_a": 0.5, "share_b": 0.6, "share_delta": 0.1},
        "pos": {"a": 2, "b": 2, "delta": 0, "share_a": 0.5, "share_b": 0.4, "share_delta": -0.1},
    }
    assert d["quarantine"]["by_reason"] == {
        "empty": {"a": 2, "b": 1, "delta": -1},
        "marker": {"a": 1, "b": 0, "delta": -1},
        "too_long": {"a": 0, "b": 1, "delta": 1},
        "empty_after_cleaning": {"a": 0, "b": 1, "delta": 1},
    }
    assert d["quarantine"]["total"] == {"a": 3, "b": 3, "delta": 0}


def test_core_flags_documents_that_changed_split():
    d = diff_snapshots(A, B)
    sp = d["splits"]
    assert sp["counts"] == {
        "train": {"a": 2, "b": 2, "delta": 0, "added": 1, "removed": 1},
        "valid": {"a": 1, "b": 1, "delta": 0, "added": 1, "removed": 0},
        "test": {"a": 1, "b": 2, "delta": 1, "added": 0, "removed": 0},
    }
    assert sp["moved"] == 1
    assert sp["moved_examples"] == [{"doc_id": "d3", "split_a": "valid", "split_b": "test"}]
    assert len(d["warnings"]) == 1 and "changed split" in d["warnings"][0]
    md, text = render_markdown(d).splitlines(), render_text(d).splitlines()
    assert md[2].startswith("> **WARNING:** 1 document(s) present at both revisions changed split")
    assert text[3].startswith("WARNING: 1 document(s) present at both revisions changed split")
    assert "- `d3` `valid` → `test`" in md and "    - d3 valid → test" in text
    # and a diff of a revision with itself has nothing to report
    same = diff_snapshots(A, A)
    assert same["splits"]["moved"] == 0 and same["warnings"] == []
    assert same["documents"]["unchanged"] == 4 and same["vocab"]["added"] == same["vocab"]["dropped"] == 0


def test_core_vocabulary_changes_and_oov_rate():
    v = diff_snapshots(A, B, top=1)["vocab"]
    assert (v["size_a"], v["size_b"], v["delta"], v["added"], v["dropped"]) == (5, 6, 1, 2, 1)
    assert v["top_added"] == [{"token": "newer", "count": 7}]  # most frequent first
    assert v["top_dropped"] == [{"token": "old", "count": 3}]
    # B's test tokens: good new zzz bad newer → A's vocab lacks new, zzz, newer; B's only zzz
    assert v["test_tokens"] == 5
    assert v["oov_rate_test_b_under_a"] == pytest.approx(3 / 5)
    assert v["oov_rate_test_b_under_b"] == pytest.approx(1 / 5)
    assert diff_snapshots(B, A)["vocab"]["test_tokens"] is None  # A carries no test tokens


def test_core_rejects_duplicate_doc_ids():
    dup = _snap(
        "dup",
        docs=[("d1", "pos", "x"), ("d1", "neg", "x")],
        splits=[("d1", "train")],
        reasons=[],
        tokens=["a"],
    )
    with pytest.raises(DiffError, match=r"documents \(b\): doc_id is not unique .*d1"):
        diff_snapshots(A, dup)


def test_core_is_vectorised_on_a_large_corpus():
    # 200k documents per side: a per-row Python path would take far longer than the bound here
    import time

    n = 200_000
    ids = to_hex(np.arange(n, dtype=np.uint64) * np.uint64(2654435761))
    labels = np.where(np.arange(n) % 3 == 0, "neg", "pos").astype(object)
    docs = pd.DataFrame({"doc_id": ids, "label": labels, "text": "t"})
    split = pd.DataFrame({"doc_id": ids, "split": np.where(np.arange(n) % 10 == 0, "test", "train")})
    q = pd.DataFrame({"reason": pd.Series([], dtype=object)})
    vocab = {"tokens": ["<pad>", "<unk>", "a"], "counts": [0, 0, 1]}
    a = Snapshot("a", docs, split, q, vocab)
    b_docs = docs.iloc[1000:].copy()
    b_docs.loc[b_docs.index[:500], "label"] = "other"
    b = Snapshot("b", b_docs, split.iloc[1000:], q, vocab)
    t = time.perf_counter()
    d = diff_snapshots(a, b)
    assert time.perf_counter() - t < 10
    assert (d["documents"]["removed"], d["documents"]["relabeled"], d["documents"]["added"]) == (
        1000,
        500,
        0,
    )


# =============================================================================================
# the command on a real git + DVC repo

NEUTRAL = [
    "房间",
    "酒店",
    "手机",
    "价格",
    "服务",
    "屏幕",
    "room",
    "phone",
    "book",
    "price",
    "screen",
]
POS = ["很好", "喜欢", "满意", "great", "love", "perfect"]
NEG = ["很差", "失望", "难用", "awful", "broken", "refund"]


def _text(i: int, lex: list[str]) -> str:
    # unique text (the number), varied tokens (digits are cleaned away, words are not)
    return f"{NEUTRAL[i % len(NEUTRAL)]} {NEUTRAL[(i * 7 + 3) % len(NEUTRAL)]} {lex[i % len(lex)]} #{i}"


V1_POS = [_text(i, POS) for i in range(40)]
V1_NEG = [_text(100 + i, NEG) for i in range(40)]
REMOVED = V1_POS[:5] + V1_NEG[:3]
RELABELED = {t: "neg" for t in V1_POS[5:9]} | {t: "pos" for t in V1_NEG[3:5]}
NEW_POS = [
    f"zebra {w} {NEUTRAL[i]} #{200 + i}" for i, w in enumerate(["great", "love", "perfect", "很好", "喜欢", "满意"])
]
NEW_NEG = [_text(300 + i, NEG) for i in range(4)]
PUNCT_ONLY = "!!! ???"  # a document at ingest, empty after cleaning → quarantined by clean


def _v2_docs() -> list[tuple[str, str]]:
    pos = [t for t in V1_POS if t not in REMOVED and t not in RELABELED]
    neg = [t for t in V1_NEG if t not in REMOVED and t not in RELABELED]
    pos += [t for t, lab in RELABELED.items() if lab == "pos"] + NEW_POS
    neg += [t for t, lab in RELABELED.items() if lab == "neg"] + NEW_NEG
    # a blank line (`empty`) and a marker line (`marker`) in the middle of pos.txt
    pos = pos[:10] + ["", "<停止词> 不是文档"] + pos[10:] + [PUNCT_ONLY]
    return [("pos", t) for t in pos] + [("neg", t) for t in neg]


def _ids(texts) -> set[str]:
    return set(to_hex(hash64(normalize(list(texts)))))


def _vocab_tokens(path: Path) -> dict[str, int]:
    v = json.loads(path.read_text(encoding="utf-8"))
    return dict(zip(v["tokens"][2:], v["counts"][2:], strict=True))


DATA_STAGES = ("ingest", "clean", "split", "vocab")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """HEAD~2: the fixture commit (no outputs); HEAD~1: v1 + outputs (pushed); HEAD: v2 (pushed).
    Copies of v1's vocab and v2's test split are kept aside for independent expectations."""
    base = tmp_path_factory.mktemp("datadiff")
    docs_v1 = [("pos", t) for t in V1_POS] + [("neg", t) for t in V1_NEG]
    # punctuation removed, so the punctuation-only document is left empty by clean
    root = make_repo(
        base / "repo",
        docs_v1,
        params={"ingest": {"max_chars": 20000}, "clean": {"punctuation": True}},
    )
    # the data half only: what the diff reads, without training a model twice
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    dvc_yaml["stages"] = {k: v for k, v in dvc_yaml["stages"].items() if k in DATA_STAGES}
    dvc_yaml.pop("plots", None)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False), encoding="utf-8")
    run(["git", "commit", "-qa", "--amend", "-m", "fixture repo (data half)"], root)
    run(["dvc", "remote", "add", "-d", "store", str(base / "remote")], root)
    run(["dvc", "repro", "vocab"], root)
    run(["dvc", "push"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "v1"], root)
    shutil.copy(root / "data/processed/vocab.json", base / "vocab_v1.json")

    shutil.rmtree(root / "data/raw")
    from tests.fixtures import write_text_dir

    write_text_dir(root / "data/raw", _v2_docs())
    params = (root / "params.yaml").read_text(encoding="utf-8")
    assert "max_chars: 20000" in params
    (root / "params.yaml").write_text(params.replace("max_chars: 20000", "max_chars: 10000"), encoding="utf-8")
    run(["dvc", "repro", "vocab"], root)
    run(["dvc", "push"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "v2: add, remove, relabel"], root)
    shutil.copy(root / "data/processed/vocab.json", base / "vocab_v2.json")
    shutil.copy(root / "data/processed/test.parquet", base / "test_v2.parquet")
    return root


def textclf(capsys, repo: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["diff", "--repo", str(repo), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_counts_between_two_commits(repo, capsys):
    rc, out, err = textclf(capsys, repo, "HEAD~1", "HEAD", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["a"]["rev"] == "HEAD~1" and d["b"]["rev"] == "HEAD" and len(d["b"]["commit"]) == 40
    docs = d["documents"]
    assert {k: docs[k] for k in ("a", "b", "added", "removed", "relabeled", "unchanged")} == {
        "a": 80,
        "b": 83,
        "added": 11,
        "removed": 8,
        "relabeled": 6,
        "unchanged": 66,
    }
    ex = docs["examples"]
    assert len(ex["added"]) == 5 and {e["doc_id"] for e in ex["added"]} <= _ids(NEW_POS + NEW_NEG + [PUNCT_ONLY])
    assert {e["doc_id"] for e in ex["removed"]} <= _ids(REMOVED) and len(ex["removed"]) == 5
    assert {e["doc_id"] for e in ex["relabeled"]} <= _ids(RELABELED)
    for e in ex["relabeled"]:
        assert (e["label_a"], e["label"]) in {("pos", "neg"), ("neg", "pos")}

    assert d["labels"]["pos"] == {
        "a": 40,
        "b": 40,
        "delta": 0,
        "share_a": 0.5,
        "share_b": round(40 / 83, 4),
        "share_delta": round(40 / 83 - 0.5, 4),
    }
    assert d["labels"]["neg"]["a"] == 40 and d["labels"]["neg"]["b"] == 43

    sp = d["splits"]
    assert sum(v["a"] for v in sp["counts"].values()) == 80
    assert sum(v["b"] for v in sp["counts"].values()) == 82  # the punctuation-only doc left at clean
    assert sum(v["added"] for v in sp["counts"].values()) == 10
    assert sum(v["removed"] for v in sp["counts"].values()) == 8
    assert sp["moved"] == 0 and d["warnings"] == []

    assert d["quarantine"]["by_reason"] == {
        "empty": {"a": 0, "b": 1, "delta": 1},
        "marker": {"a": 0, "b": 1, "delta": 1},
        "empty_after_cleaning": {"a": 0, "b": 1, "delta": 1},
    }
    assert d["quarantine"]["total"] == {"a": 0, "b": 3, "delta": 3}

    # vocabulary: against the two vocab.json files and v2's test split, read independently
    base = repo.parent
    va, vb = _vocab_tokens(base / "vocab_v1.json"), _vocab_tokens(base / "vocab_v2.json")
    added, dropped = set(vb) - set(va), set(va) - set(vb)
    v = d["vocab"]
    assert (v["size_a"], v["size_b"]) == (len(va) + 2, len(vb) + 2)
    assert (v["added"], v["dropped"]) == (len(added), len(dropped))
    assert "zebra" in added  # only the added documents have it
    assert [t["token"] for t in v["top_added"]] == sorted(added, key=lambda t: (-vb[t], t))[:10]
    test_tokens = [t for row in pq.read_table(base / "test_v2.parquet").column("tokens").to_pylist() for t in row]
    assert v["test_tokens"] == len(test_tokens) > 0
    oov = sum(t not in va for t in test_tokens) / len(test_tokens)
    assert v["oov_rate_test_b_under_a"] == pytest.approx(oov, abs=1e-6)
    assert v["oov_rate_test_b_under_b"] == pytest.approx(
        sum(t not in vb for t in test_tokens) / len(test_tokens), abs=1e-6
    )

    # params and metrics, as DVC diffs them
    assert d["params"]["params.yaml"]["ingest.max_chars"] == {
        "old": 20000,
        "new": 10000,
        "diff": -10000,
    }
    ingest = d["metrics"]["reports/data/ingest.json"]
    assert ingest["kept"] == {"old": 80, "new": 83, "diff": 3}
    assert ingest["quarantined"] == {"old": 0, "new": 2, "diff": 2}
    assert d["unreadable"] == {"params": [], "metrics": []}


def test_markdown_and_terminal_rendering(repo, capsys):
    rc, md, err = textclf(capsys, repo, "HEAD~1", "HEAD", "--md")
    assert rc == 0, err
    lines = md.splitlines()
    assert lines[0].startswith("## Data diff: `HEAD~1` (") and "→ `HEAD` (" in lines[0]
    for expected in [
        "### Documents",
        "| added | 11 |",
        "| removed | 8 |",
        "| relabelled | 6 |",
        "| unchanged | 66 |",
        "| at HEAD~1 | 80 |",
        "| at HEAD | 83 |",
        "| label | HEAD~1 | HEAD | Δ | share HEAD~1 | share HEAD | Δ share |",
        "| `neg` | 40 | 43 | +3 | 50.0% | 51.8% | +1.8 pp |",
        "| `pos` | 40 | 40 | 0 | 50.0% | 48.2% | -1.8 pp |",
        "| `empty_after_cleaning` | 0 | 1 | +1 |",
        "| total | 0 | 3 | +3 |",
        "No document present at both revisions changed split.",
        "| `params.yaml` | `ingest.max_chars` | 20,000 | 10,000 |",
        "| `reports/data/ingest.json` | `kept` | 80 | 83 | +3 |",
    ]:
        assert expected in lines, expected
    assert sum(line.startswith("- relabelled `") for line in lines) == 5

    # the same report nested under a flow artifact's own heading
    nested = markdown_diff(repo, "HEAD", level=3).splitlines()
    assert nested[0].startswith("### Data diff: `HEAD` (") and nested[0].endswith(") → `workspace`")
    assert "#### Documents" in nested
    assert "| unchanged | 83 |" in nested

    rc, text, err = textclf(capsys, repo, "HEAD~1", "HEAD")
    assert rc == 0, err
    assert "|" not in text and "`" not in text
    rows = [line.split() for line in text.splitlines()]
    assert ["relabelled", "6"] in rows and [
        "neg",
        "40",
        "43",
        "+3",
        "50.0%",
        "51.8%",
        "+1.8",
        "pp",
    ] in rows


def test_workspace_against_head(repo, capsys):
    """HEAD is v2; put v1's data and outputs back in the workspace: the diff runs the other way."""
    run(["git", "checkout", "HEAD~1", "--", "data/raw", "params.yaml", "dvc.lock", "reports"], repo)
    run(["dvc", "pull"], repo)  # from the cache, or the remote if the cache was collected
    try:
        rc, out, err = textclf(capsys, repo, "--json")
        assert rc == 0, err
        d = json.loads(out)
        assert d["a"]["rev"] == "HEAD" and d["b"] == {"rev": "workspace", "commit": None}
        assert {k: d["documents"][k] for k in ("a", "b", "added", "removed", "relabeled", "unchanged")} == {
            "a": 83,
            "b": 80,
            "added": 8,
            "removed": 11,
            "relabeled": 6,
            "unchanged": 66,
        }
        assert d["quarantine"]["total"] == {"a": 3, "b": 0, "delta": -3}
        assert d["params"]["params.yaml"]["ingest.max_chars"] == {
            "old": 10000,
            "new": 20000,
            "diff": 10000,
        }
    finally:
        run(["git", "checkout", "HEAD", "--", "."], repo)
        run(["dvc", "checkout"], repo)
    rc, out, _ = textclf(capsys, repo, "--json")  # workspace back at HEAD: nothing changed
    d = json.loads(out)
    assert rc == 0 and d["documents"]["unchanged"] == 83 and d["params"] == {} and d["metrics"] == {}


def test_missing_outputs_say_how_to_get_them(repo, capsys):
    # the fixture commit never ran the pipeline
    rc, out, err = textclf(capsys, repo, "HEAD~2", "HEAD")
    assert rc == 2 and out == ""
    assert "data/interim/documents.parquet at HEAD~2" in err and "no such pipeline output" in err
    assert "git checkout HEAD~2 && dvc repro" in err

    # params/metrics are diffed generically: a metrics file a revision lacks is listed, not fatal
    with Repo(str(repo)) as r:
        changes = dvc_changes(r, "HEAD~2", "HEAD")
    assert changes["unreadable"]["metrics"] == [
        f"reports/data/{s}.json at HEAD~2 (missing)" for s in ("clean", "ingest", "split")
    ]
    assert changes["metrics"]["reports/data/ingest.json"]["kept"] == {"old": None, "new": 83}

    # v1's data only on the remote: read through it; with the remote gone too, say `dvc pull`
    run(["dvc", "gc", "--workspace", "--force"], repo)
    rc, out, err = textclf(capsys, repo, "HEAD~1", "HEAD", "--json")
    assert rc == 0, err
    assert json.loads(out)["documents"]["removed"] == 8
    remote = repo.parent / "remote"
    remote.rename(remote.with_name("remote-away"))
    try:
        rc, out, err = textclf(capsys, repo, "HEAD~1", "HEAD")
    finally:
        remote.with_name("remote-away").rename(remote)
    assert rc == 2 and out == ""
    assert "at HEAD~1" in err and "neither the local DVC cache nor the remote" in err and "dvc pull" in err


def test_unknown_revision_is_a_clear_error(repo):
    proc = run(["textclf", "diff", "no-such-rev"], repo, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unknown revision 'no-such-rev'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(["textclf", "diff", "HEAD", "HEAD~99"], repo, check=False)
    assert proc.returncode == 2 and "unknown revision 'HEAD~99'" in proc.stderr


def test_corrupt_or_contract_breaking_files_are_named(repo, capsys):
    docs = repo / "data/interim/documents.parquet"
    vocab = repo / "data/processed/vocab.json"
    saved = {p: p.read_bytes() for p in (docs, vocab)}

    def replace(path: Path, data: bytes) -> None:
        path.unlink()  # never write through a link into the DVC cache
        path.write_bytes(data)

    try:
        replace(docs, b"PAR1 this is not parquet")
        rc, _, err = textclf(capsys, repo)
        assert rc == 2 and "data/interim/documents.parquet at workspace: not a readable Parquet file" in err

        no_label = pa.table({"doc_id": ["0123456789abcdef"], "text": ["x"]})
        docs.unlink()
        pq.write_table(no_label, docs)
        rc, _, err = textclf(capsys, repo)
        assert rc == 2 and "documents.parquet at workspace: breaks its contract: column(s) ['label'] missing" in err

        dup = pa.table({"doc_id": ["0123456789abcdef"] * 2, "label": ["pos", "neg"], "text": ["x", "y"]})
        docs.unlink()
        pq.write_table(dup, docs)
        rc, _, err = textclf(capsys, repo)
        assert rc == 2 and "documents.parquet at workspace: breaks its contract: doc_id not unique" in err

        replace(docs, saved[docs])
        v = json.loads(saved[vocab])
        v["tokens"][2] = v["tokens"][3]  # a duplicate token: the hash no longer matches either
        replace(vocab, json.dumps(v).encode())
        rc, _, err = textclf(capsys, repo)
        assert rc == 2 and "data/processed/vocab.json at workspace: invalid vocabulary" in err
    finally:
        for p, data in saved.items():
            replace(p, data)
    rc, _, err = textclf(capsys, repo)
    assert rc == 0, err


def test_without_test_predictions_the_explanation_says_what_is_missing(repo, capsys):
    rc, out, err = textclf(capsys, repo, "HEAD~1", "HEAD", "--json")
    assert rc == 0, err
    e = json.loads(out)["explain"]
    assert e["metric"] == "test.macro_f1" and "reports/predictions.parquet" in e["error"]
    assert "reports/predictions.parquet" in json.loads(out)["drift"]["error"]
    rc, out, _ = textclf(capsys, repo, "HEAD~1", "HEAD")
    assert rc == 0 and "Why test.macro_f1 moved" in out and "Not explained: " in out
    rc, out, _ = textclf(capsys, repo, "HEAD~1", "HEAD", "--json", "--no-explain")
    assert rc == 0 and "explain" not in json.loads(out) and "drift" not in json.loads(out)
