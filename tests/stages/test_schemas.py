"""textclf.schemas: the artifact contracts catch what they promise to, and report it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from textclf import schemas
from textclf.errors import ContractError
from textclf.text import hash64, to_hex


def documents(n: int = 3) -> pd.DataFrame:
    texts = [f"text {i}" for i in range(n)]
    return pd.DataFrame(
        {
            "doc_id": pd.Series(to_hex(hash64(texts)), dtype="str"),
            "text": pd.Series(texts, dtype="str"),
            "label": pd.Series(["a", "b", "a"][:n], dtype="str"),
            "source": pd.Series(["raw/a.txt"] * n, dtype="str"),
            "line": pd.array([1, 2, None][:n], dtype="Int64"),
            "split": pd.Series([None, "train", "test"][:n], dtype=object),
        }
    )


def clean_docs(n: int = 3) -> pd.DataFrame:
    return documents(n).assign(tokens=pd.Series([["t"]] * n, dtype=schemas.TOKENS_DTYPE))


def split_docs(n: int = 3) -> pd.DataFrame:
    df = clean_docs(n)
    return df.assign(split=pd.Series(["train"] * n, dtype="str"), group_id=df["doc_id"])


def failures(df, schema) -> set[tuple[str, str]]:
    with pytest.raises(ContractError) as err:
        schemas.validate(df, schema, "test")
    report = json.loads((schemas.VALIDATION_DIR / "test.json").read_text(encoding="utf-8"))
    assert report["stage"] == "test" and report["failure_cases"]
    assert all(line in str(err.value) for line in report["summary"])
    return {(str(c["column"]), str(c["check"]).split("(")[0]) for c in report["failure_cases"]}


@pytest.mark.parametrize(
    "frame, schema",
    [(documents, schemas.Documents), (clean_docs, schemas.Clean), (split_docs, schemas.SplitDocs)],
)
def test_valid_frames_pass(frame, schema):
    df = frame()
    assert schemas.validate(df, schema, "test") is not None


def test_documents_contract_violations_are_all_reported_at_once():
    df = documents()
    df.loc[1, "doc_id"] = df.loc[0, "doc_id"]
    df.loc[2, "text"] = "   "
    df.loc[0, "split"] = "holdout"
    df["line"] = pd.array([0, 2, 3], dtype="Int64")
    got = failures(df, schemas.Documents)
    assert {
        ("doc_id", "field_uniqueness"),
        ("text", "no_blank_strings"),
        ("split", "isin"),
        ("line", "greater_than_or_equal_to"),
    } <= got


def test_documents_is_strict_about_columns():
    got = failures(documents().assign(extra=1), schemas.Documents)
    assert any(check == "column_in_schema" for _, check in got)
    got = failures(documents().drop(columns="label"), schemas.Documents)
    assert any(check == "column_in_dataframe" for _, check in got)


def test_clean_tokens_must_be_non_empty_lists():
    df = clean_docs()
    df["tokens"] = pd.Series([["a"], [], None], dtype=schemas.TOKENS_DTYPE)
    got = failures(df, schemas.Clean)
    assert ("tokens", "non_empty_lists") in got
    summary = json.loads((schemas.VALIDATION_DIR / "test.json").read_text(encoding="utf-8"))["summary"]
    assert any("column tokens" in line and "non_empty_lists" in line for line in summary)


def test_non_empty_lists_check_works_on_arrow_and_object_columns():
    arrow = pd.Series([["a"], [], None], dtype=schemas.TOKENS_DTYPE)
    assert schemas.non_empty_lists(arrow).tolist() == [True, False, False]
    assert schemas.non_empty_lists(pd.Series([["a", "b"], []], dtype=object)).tolist() == [
        True,
        False,
    ]


def test_split_docs_need_a_split_and_a_group():
    df = split_docs()
    df["split"] = pd.Series(["train", None, "dev"], dtype=object)
    df.loc[0, "group_id"] = "not-a-hash"
    got = failures(df, schemas.SplitDocs)
    assert ("split", "isin") in got and ("group_id", "str_matches") in got
    assert any(col == "split" and "null" in check for col, check in got)


def test_rejected_contract():
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in ["record", "source", "line", "reason", "label"]})
    assert len(schemas.validate(empty, schemas.Rejected, "test")) == 0  # coerced, still valid
    bad = pd.DataFrame(
        {
            "record": ["x"],
            "source": ["f"],
            "line": pd.array([1], dtype="Int64"),
            "reason": ["because"],
            "label": [None],
        }
    )
    assert ("reason", "isin") in failures(bad, schemas.Rejected)
    for reason in schemas.INGEST_REASONS + schemas.CLEAN_REASONS:
        schemas.validate(bad.assign(reason=reason), schemas.Rejected, "test")


def test_predictions_schema_checks_labels_and_probabilities():
    schema = schemas.predictions_schema(["neg", "pos"])
    ok = pd.DataFrame(
        {
            "doc_id": ["a", "b"],
            "label": ["neg", "pos"],
            "predicted": ["pos", "pos"],
            "prob_neg": [0.2, 0.1],
            "prob_pos": [0.8, 0.9],
        }
    )
    schemas.validate(ok, schema, "test")
    got = failures(ok.assign(predicted=["pos", "other"], prob_pos=[0.8, 1.5]), schema)
    assert ("predicted", "isin") in got and ("prob_pos", "in_range") in got


def test_atomic_writes_keep_the_replaced_files_mode(tmp_path):
    import stat

    from textclf.artifacts import write_bytes

    f = tmp_path / "params.yaml"
    f.write_text("a: 1\n")
    f.chmod(0o640)
    write_bytes(f, b"a: 2\n")
    assert f.read_bytes() == b"a: 2\n" and stat.S_IMODE(f.stat().st_mode) == 0o640
    new = tmp_path / "new.json"
    write_bytes(new, b"{}")
    assert stat.S_IMODE(new.stat().st_mode) & 0o044  # readable by others, not mkstemp's 0600
