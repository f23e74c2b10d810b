"""clean: documents → token lists; documents with nothing left are quarantined, not dropped."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from stages import clean as clean_stage
from tests.fixtures import contract_failure
from textclf import schemas
from textclf.artifacts import read_parquet, write_parquet
from textclf.data.clean import CleanResult, clean
from textclf.params import CleanParams
from textclf.text import hash64, load_stopwords, to_hex


def documents(texts: list[str], labels: list[str] | None = None) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "doc_id": pd.Series(to_hex(hash64(texts)), dtype="str"),
            "text": pd.Series(texts, dtype="str"),
            "label": pd.Series(labels or ["pos"] * n, dtype="str"),
            "source": pd.Series(["raw/pos.txt"] * n, dtype="str"),
            "line": pd.array(range(1, n + 1), dtype="Int64"),
            "split": pd.Series([None] * n, dtype="str"),
        }
    )


def run_clean(texts, **kw) -> CleanResult:
    params = CleanParams(**kw)
    result = clean(documents(texts), params, load_stopwords(params))
    schemas.validate(result.clean, schemas.Clean, "clean")
    schemas.validate(result.rejected, schemas.Rejected, "clean")
    return result


def test_tokens_are_an_arrow_list_column_and_other_columns_pass_through():
    docs = documents(["这本书很好看！", "Great book, would buy again."])
    result = clean(docs, CleanParams(), load_stopwords(CleanParams()))
    out = result.clean
    assert out["tokens"].dtype == schemas.TOKENS_DTYPE
    assert out["tokens"].tolist() == [["本", "书", "很", "好", "看"], ["great", "book", "buy"]]
    pd.testing.assert_frame_equal(out.drop(columns="tokens"), docs, check_dtype=False)
    assert result.stats["tokens"] == 8 and result.stats["kept"] == 2


def test_documents_empty_after_cleaning_are_quarantined_with_source_and_line():
    result = run_clean(["好评", "。。。！！！", "123 456", "的 了 the and", "<br/><script>x()</script>", "ok"])
    assert result.clean["text"].tolist() == ["好评", "ok"]
    rej = result.rejected
    assert rej["reason"].unique().tolist() == ["empty_after_cleaning"]
    assert rej["line"].tolist() == [2, 3, 4, 5]
    assert rej["record"].tolist() == [
        "。。。！！！",
        "123 456",
        "的 了 the and",
        "<br/><script>x()</script>",
    ]
    assert (rej["source"] == "raw/pos.txt").all() and (rej["label"] == "pos").all()
    s = result.stats
    assert (s["read"], s["kept"], s["quarantined"]) == (6, 2, 4)
    assert s["read"] == s["kept"] + s["quarantined"]


def test_html_script_content_is_removed():
    tokens = run_clean(["<div>Nice <script>document.write('spam')</script>phone</div>"]).clean["tokens"][0]
    assert list(tokens) == ["nice", "phone"]


def test_urls_emails_and_mixed_text():
    tokens = run_clean(["联系 me@shop.com 或访问https://shop.com/item?id=1，iPhone不错"]).clean["tokens"][0]
    assert list(tokens) == ["联", "系", "<email>", "访", "问", "<url>", "iphone", "不", "错"]


def test_tokenizer_choice_changes_tokens():
    assert list(run_clean(["手机 很好"], tokenizer="word").clean["tokens"][0]) == ["手机", "很好"]
    assert list(run_clean(["手机 很好"], tokenizer="char").clean["tokens"][0]) == [
        "手",
        "机",
        "很",
        "好",
    ]


def test_all_documents_empty_gives_valid_empty_output():
    result = run_clean(["!!!", "..."])
    assert len(result.clean) == 0 and len(result.rejected) == 2
    assert result.stats["tokens_per_doc"]["max"] == 0


# ---------------------------------------------------------------------------------------------
# the stage entry point


def setup_stage(tmp_path, monkeypatch, texts, **clean_values) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"clean": clean_values}), encoding="utf-8")
    write_parquet(documents(texts), "data/interim/documents.parquet")


def test_main_writes_clean_rejected_and_stats(tmp_path, monkeypatch):
    setup_stage(tmp_path, monkeypatch, ["很好", "！！", "不错的书"])
    clean_stage.main()
    table = pq.read_table("data/interim/clean.parquet")
    assert str(table.schema.field("tokens").type) == "list<element: string>"  # not pickled objects
    out = read_parquet("data/interim/clean.parquet")
    assert out["tokens"].tolist() == [["很", "好"], ["不", "错", "书"]]
    assert read_parquet("data/interim/rejected_clean.parquet")["record"].tolist() == ["！！"]
    assert json.loads((tmp_path / "reports/data/clean.json").read_text())["quarantined"] == 1


def test_main_exits_non_zero_and_reports_when_output_breaks_the_contract(tmp_path, monkeypatch):
    setup_stage(tmp_path, monkeypatch, ["很好", "不错"])

    def broken(docs, params, stopwords):
        result = clean(docs, params, stopwords)
        out = result.clean.copy()
        out["tokens"] = pd.Series([[], ["x"]], dtype=schemas.TOKENS_DTYPE)  # an empty token list
        return CleanResult(out, result.rejected, result.stats)

    monkeypatch.setattr(clean_stage, "clean", broken)
    report = contract_failure(clean_stage.main, tmp_path, "clean")
    assert report["stage"] == "clean"
    assert any("tokens" in line and "non_empty_lists" in line and "1 value" in line for line in report["summary"])
    assert not (tmp_path / "data/interim/clean.parquet").exists()


def test_main_missing_stopwords_file_is_a_clear_error(tmp_path, monkeypatch, caplog):
    setup_stage(tmp_path, monkeypatch, ["很好"], stopwords_file="missing.txt")
    with pytest.raises(SystemExit) as exc:
        clean_stage.main()
    assert exc.value.code == 5 and "missing.txt" in caplog.text  # unreadable input


def test_main_without_documents_is_a_clear_error(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("clean: {}\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        clean_stage.main()
    assert "documents.parquet" in caplog.text and "dvc repro" in caplog.text
