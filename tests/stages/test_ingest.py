"""ingest: every record read is kept, collapsed into a duplicate, or quarantined with a reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import ingest as ingest_stage
from tests.fixtures import contract_failure
from textclf import schemas
from textclf.artifacts import read_parquet
from textclf.data.ingest import IngestResult, ingest
from textclf.params import IngestParams
from textclf.sources import RECORD_COLUMNS, read_records
from textclf.text import hash64, to_hex


def run_ingest(source, **kw) -> IngestResult:
    params = IngestParams(source=str(source), **kw)
    result = ingest(read_records(params), params)
    schemas.validate(result.documents, schemas.Documents, "ingest")
    schemas.validate(result.rejected, schemas.Rejected, "ingest")
    return result


def check_accounting(stats: dict) -> None:
    assert stats["read"] == stats["kept"] + stats["duplicates"] + stats["quarantined"]
    assert sum(stats["by_reason"].values()) == stats["quarantined"]
    assert sum(stats["by_label"].values()) == stats["kept"]


def record_frame(rows: list[dict]) -> pd.DataFrame:
    base = {
        "text": None,
        "label": None,
        "split": None,
        "source": "mem",
        "line": None,
        "reason": None,
    }
    df = pd.DataFrame([{**base, **r} for r in rows], columns=RECORD_COLUMNS).astype(object)
    df["line"] = pd.array(df["line"], dtype="Int64")
    return df


@pytest.fixture()
def messy(tmp_path):
    """A text directory with every kind of trouble, in both text layouts."""
    root = tmp_path / "raw"
    root.mkdir()
    (root / "pos.txt").write_bytes(
        b"\n".join(
            [
                "好评 很好".encode(),  # 1 kept
                "好评 很好".encode(),  # 2 duplicate
                b"",  # 3 empty
                b"   ",  # 4 empty (whitespace only)
                "<停止词>".encode(),  # 5 marker
                b"\xff\xfe",  # 6 undecodable
                "冲突文本".encode(),  # 7 label_conflict
                "ＦＵＬＬ width".encode(),  # 8 kept (NFKC: FULL width)
                b"FULL \t width",  # 9 duplicate of 8 after normalisation
                b"a" * 150,  # 10 too_long (max_chars=100)
            ]
        )
        + b"\n"
    )
    (root / "neg.txt").write_text("冲突文本\n 冲突文本 \n差评\n", encoding="utf-8")  # 2 conflicts, 1 kept
    (root / "bin.txt").write_bytes(b"\x7fELF\x00\x00\x00")  # binary
    (root / "empty.txt").write_bytes(b"")  # no lines, no records
    (root / "neutral").mkdir()
    (root / "neutral" / "a.txt").write_text("文件文档", encoding="utf-8")  # kept
    (root / "neutral" / "b.txt").write_text("  \n", encoding="utf-8")  # empty
    return root


def test_accounting_on_a_messy_mixed_corpus(messy):
    result = run_ingest(messy, max_chars=100)
    s = result.stats
    check_accounting(s)
    assert (s["read"], s["kept"], s["duplicates"], s["quarantined"]) == (16, 4, 2, 10)
    assert {k: v for k, v in s["by_reason"].items() if v} == {
        "empty": 3,
        "marker": 1,
        "undecodable": 1,
        "label_conflict": 3,
        "too_long": 1,
        "binary": 1,
    }
    assert set(s["by_reason"]) == set(schemas.INGEST_REASONS)  # every reason reported, zeros too
    assert s["by_label"] == {"neg": 1, "neutral": 1, "pos": 2}
    assert set(result.documents["text"]) == {"FULL width", "差评", "好评 很好", "文件文档"}


def test_rejected_rows_keep_record_source_and_line(messy):
    rej = run_ingest(messy, max_chars=100).rejected
    got = {
        (
            r.reason,
            r.source.rsplit("/", 2)[-1] if r.source.endswith(".txt") else r.source,
            r.line,
            r.record,
        )
        for r in rej.astype(object).itertuples()
    }
    pos, neg = str(messy / "pos.txt"), str(messy / "neg.txt")
    assert ("undecodable", "pos.txt", 6, "\\xff\\xfe") in got
    assert ("marker", "pos.txt", 5, "<停止词>") in got
    assert (
        "label_conflict",
        "neg.txt",
        2,
        " 冲突文本 ",
    ) in got  # the original, unnormalised record
    conflicts = rej.loc[rej["reason"] == "label_conflict"]
    assert sorted(zip(conflicts["source"], conflicts["line"], conflicts["label"], strict=True)) == [
        (neg, 1, "neg"),
        (neg, 2, "neg"),
        (pos, 7, "pos"),
    ]
    assert rej.loc[rej["reason"] == "too_long", "record"].item() == "a" * 150
    binary = rej.loc[rej["reason"] == "binary"].iloc[0]
    assert binary["source"].endswith("bin.txt") and pd.isna(binary["line"])
    assert rej["source"].str.endswith("b.txt").sum() == 1  # the blank one-document file


def test_documents_keep_first_source_and_line_and_hash_the_normalised_text(messy):
    docs = run_ingest(messy, max_chars=100).documents
    row = docs.loc[docs["text"] == "FULL width"].iloc[0]
    assert (row["source"], row["line"], row["label"]) == (str(messy / "pos.txt"), 8, "pos")
    assert docs["doc_id"].tolist() == list(to_hex(hash64(docs["text"].tolist())))
    assert docs["split"].isna().all()


def test_a_one_megabyte_line_is_quarantined_too_long_with_default_max_chars(tmp_path):
    (tmp_path / "pos.txt").write_text("好" * 1_000_000 + "\n短评\n", encoding="utf-8")
    result = run_ingest(tmp_path)
    assert result.stats["by_reason"]["too_long"] == 1
    assert result.documents["text"].tolist() == ["短评"]
    assert len(result.rejected["record"].iloc[0]) == 1_000_000


def test_max_chars_is_inclusive_and_counts_characters_not_bytes():
    recs = record_frame([{"text": "好" * 5, "label": "a", "line": 1}, {"text": "好" * 6, "label": "a", "line": 2}])
    result = ingest(recs, IngestParams(max_chars=5))
    assert result.documents["text"].tolist() == ["好" * 5]
    assert result.rejected["reason"].tolist() == ["too_long"]


def test_conflicting_labels_quarantine_every_copy_but_same_label_copies_collapse():
    recs = record_frame(
        [
            {"text": "same", "label": "pos", "line": 1},
            {"text": "same", "label": "pos", "line": 2},
            {"text": "same", "label": "neg", "line": 3},
            {"text": "dup", "label": "pos", "line": 4},
            {"text": "dup ", "label": "pos", "line": 5},
            {"text": "ok", "label": " neg ", "line": 6},
        ]
    )
    result = ingest(recs, IngestParams())
    assert result.rejected["line"].tolist() == [1, 2, 3]
    assert set(result.rejected["reason"]) == {"label_conflict"}
    assert result.documents["text"].tolist() == ["dup", "ok"]
    assert result.documents["label"].tolist() == ["pos", "neg"]  # labels are trimmed
    assert result.stats["duplicates"] == 1


def test_missing_labels_and_split_values():
    recs = record_frame(
        [
            {"text": "a", "label": None},
            {"text": "b", "label": "  "},
            {"text": "c", "label": "x", "split": "Dev"},
            {"text": "d", "label": "x", "split": "holdout"},
            {"text": "e", "label": "x", "split": " TEST "},
        ]
    )
    result = ingest(recs, IngestParams())
    assert result.rejected["reason"].tolist() == ["missing_label", "missing_label", "invalid_split"]
    assert result.documents["split"].tolist() == ["valid", "test"]
    check_accounting(result.stats)


def test_copies_across_predefined_splits_keep_the_latest_split():
    recs = record_frame(
        [
            {"text": "t", "label": "a", "split": "train", "line": 1},
            {"text": "t", "label": "a", "split": "test", "line": 2},
            {"text": "u", "label": "a", "split": "valid", "line": 3},
            {"text": "u", "label": "a", "line": 4},
            {"text": "v", "label": "a", "line": 5},
        ]
    )
    result = ingest(recs, IngestParams())
    docs = result.documents.set_index("text")
    assert docs.loc["t", "split"] == "test" and docs.loc["t", "line"] == 1
    assert docs.loc["u", "split"] == "valid"
    assert pd.isna(docs.loc["v", "split"])
    assert result.stats["split_conflicts"] == 1
    assert result.stats["predefined_split"] == {"test": 1, "valid": 1}


def test_reader_reasons_are_kept():
    recs = record_frame([{"text": "{bad", "reason": "malformed"}, {"text": "fine", "label": "a"}])
    result = ingest(recs, IngestParams())
    assert result.rejected["reason"].tolist() == ["malformed"]
    assert result.rejected["record"].tolist() == ["{bad"]


def test_empty_input():
    result = ingest(record_frame([]), IngestParams())
    assert result.stats["read"] == result.stats["kept"] == 0
    schemas.validate(result.documents, schemas.Documents, "ingest")
    schemas.validate(result.rejected, schemas.Rejected, "ingest")


POOL = ["好", "好 ", "Ｇｏｏｄ", "Good", "", "  ", "x" * 12, "坏", "<停止词> m"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(POOL),
            st.sampled_from(["pos", "neg", None, ""]),
            st.sampled_from([None, "train", "test", "bogus"]),
            st.sampled_from([None, None, "undecodable"]),
        ),
        max_size=40,
    )
)
def test_accounting_invariant_holds_for_any_record_mix(rows):
    recs = record_frame(
        [{"text": t, "label": lab, "split": sp, "reason": r, "line": i + 1} for i, (t, lab, sp, r) in enumerate(rows)]
    )
    result = ingest(recs, IngestParams(max_chars=10))
    check_accounting(result.stats)
    assert result.stats["read"] == len(rows)
    docs = schemas.validate(result.documents, schemas.Documents, "ingest")
    schemas.validate(result.rejected, schemas.Rejected, "ingest")
    # every source line is either a document, a duplicate of one, or a rejected row
    assert set(docs["line"]) | set(result.rejected["line"].dropna()) <= set(range(1, len(rows) + 1))
    assert len(set(docs["line"]) | set(result.rejected["line"].dropna())) == len(rows) - result.stats["duplicates"]
    # no text left with two labels
    assert docs["text"].is_unique


# ---------------------------------------------------------------------------------------------
# the stage entry point


def write_params(tmp_path, **ingest_values) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": ingest_values}), encoding="utf-8")


def test_main_writes_documents_rejected_and_stats(tmp_path, monkeypatch, messy):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source="raw", max_chars=100)
    ingest_stage.main()
    docs = read_parquet("data/interim/documents.parquet")
    assert len(docs) == 4 and docs["line"].dtype == "Int64"
    assert len(read_parquet("data/interim/rejected_ingest.parquet")) == 10
    stats = json.loads((tmp_path / "reports/data/ingest.json").read_text(encoding="utf-8"))
    check_accounting(stats)
    assert not (tmp_path / "reports/validation/ingest.json").exists()


def test_main_exits_non_zero_and_reports_when_output_breaks_the_contract(tmp_path, monkeypatch, messy):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source="raw")

    def broken(records, params, corrections=None):
        result = ingest(records, params, corrections)
        docs = result.documents.copy()
        docs.loc[1, "doc_id"] = docs.loc[0, "doc_id"]  # a duplicate id
        docs.loc[2, "doc_id"] = "NOT-HEX"
        return IngestResult(docs, result.rejected, result.stats)

    monkeypatch.setattr(ingest_stage, "ingest", broken)
    report = contract_failure(ingest_stage.main, tmp_path, "ingest")
    assert report["stage"] == "ingest" and report["failure_cases"]
    assert any("doc_id" in line and "unique" in line for line in report["summary"])
    assert any("str_matches" in line for line in report["summary"])
    assert not (tmp_path / "data/interim/documents.parquet").exists()  # nothing half-written


def test_main_exits_non_zero_on_bad_params_or_input(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, source="raw", max_chars="many")
    with pytest.raises(SystemExit) as exc:
        ingest_stage.main()
    assert exc.value.code == 3 and "ingest.max_chars" in caplog.text  # bad params
    write_params(tmp_path, source="nowhere")
    with pytest.raises(SystemExit):
        ingest_stage.main()
    assert "nowhere" in caplog.text
