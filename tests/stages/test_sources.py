"""textclf.sources: every layout and format → a record frame; nothing is dropped, bad records carry
a reason."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textclf.errors import InputError
from textclf.params import IngestParams
from textclf.sources import RECORD_COLUMNS, read_records, resolve_format


def records(source, **kw) -> pd.DataFrame:
    df = read_records(IngestParams(source=str(source), **kw))
    assert list(df.columns) == RECORD_COLUMNS
    return df


def rows(df: pd.DataFrame, *cols: str) -> list[tuple]:
    out = df[list(cols)].astype(object)
    return [tuple(None if pd.isna(v) else v for v in r) for r in out.itertuples(index=False)]


# ---------------------------------------------------------------------------------------------
# the bundled sample


def test_the_sample_corpus_is_in_the_repository_as_its_readme_says():
    import hashlib

    from tests.fixtures import ROOT

    folder = ROOT / "data/sample/reviews-zh"
    assert sorted(p.name for p in folder.iterdir()) == [
        "neg.txt",
        "pos.txt",
    ]  # nothing else to ingest
    readme = (ROOT / "data/sample/README.md").read_text(encoding="utf-8")
    for p in folder.iterdir():  # the README's table pins the bytes
        assert hashlib.sha256(p.read_bytes()).hexdigest() in readme, p.name
    df = records(str(folder))
    assert len(df) == 35_124  # every line is a record, the one blank line included
    assert df["reason"].isna().all()
    assert set(df["label"]) == {"pos", "neg"}


# ---------------------------------------------------------------------------------------------
# text directories


def test_label_txt_layout_one_document_per_line(tmp_path, caplog):
    (tmp_path / "pos.txt").write_text("好评\n\n<停止词>\n  <停止词> 也是标记\n最后一行", encoding="utf-8")
    (tmp_path / "neg.txt").write_text("差评\r\n很差\r\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a label file", encoding="utf-8")
    df = records(tmp_path)
    assert resolve_format(IngestParams(source=str(tmp_path))) == "text_dir"
    assert rows(df, "text", "label", "line", "reason", "split") == [
        ("差评", "neg", 1, None, None),
        ("很差", "neg", 2, None, None),  # \r\n handled
        (
            "<file notes.md, 16 bytes>",
            None,
            None,
            "unsupported_file",
            None,
        ),  # accounted for, not skipped
        ("好评", "pos", 1, None, None),
        ("", "pos", 2, None, None),
        ("<停止词>", "pos", 3, "marker", None),
        ("  <停止词> 也是标记", "pos", 4, "marker", None),
        ("最后一行", "pos", 5, None, None),
    ]
    assert (
        df["source"].tolist()
        == [str(tmp_path / "neg.txt")] * 2 + [str(tmp_path / "notes.md")] + [str(tmp_path / "pos.txt")] * 5
    )
    assert "notes.md" in caplog.text


def test_label_folder_layout_one_document_per_file(tmp_path):
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg" / "sub").mkdir(parents=True)
    (tmp_path / "pos" / "a.txt").write_text("第一篇\n两行", encoding="utf-8")
    (tmp_path / "pos" / "empty.txt").write_bytes(b"")
    (tmp_path / "neg" / "sub" / "b.txt").write_text("差", encoding="gb18030")
    (tmp_path / "neg" / "bin.dat").write_bytes(b"\x89PNG\x00\x00\x01")
    df = records(tmp_path)
    assert rows(df, "text", "label", "line", "reason") == [
        ("<binary file, 7 bytes>", "neg", None, "binary"),
        ("差", "neg", None, None),
        ("第一篇\n两行", "pos", None, None),
        ("", "pos", None, None),  # an empty file is an (empty) record
    ]
    assert df["source"].tolist()[-1] == str(tmp_path / "pos" / "empty.txt")


@pytest.mark.parametrize("per_file", [False, True])
def test_predefined_split_folders(tmp_path, per_file):
    for split, folder in (("train", "train"), ("valid", "dev"), ("test", "TEST")):
        for label in ("pos", "neg"):
            if per_file:
                (tmp_path / folder / label).mkdir(parents=True)
                (tmp_path / folder / label / "1.txt").write_text(f"{split} {label}", encoding="utf-8")
            else:
                (tmp_path / folder).mkdir(exist_ok=True)
                (tmp_path / folder / f"{label}.txt").write_text(f"{split} {label}\n", encoding="utf-8")
    df = records(tmp_path)
    assert len(df) == 6
    assert (df["text"] == df["split"] + " " + df["label"]).all()
    assert sorted(df["split"].unique()) == ["test", "train", "valid"]


def test_split_folders_mixed_with_other_files_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "pos.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "neg.txt").write_text("b\n", encoding="utf-8")
    with pytest.raises(InputError, match="split folders"):
        records(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no <label>.txt"):
        records(empty, format="text_dir")


def test_bad_bytes_in_line_files(tmp_path):
    (tmp_path / "utf8.txt").write_bytes("好的\n".encode() + b"bad \xff\xfe line\n" + "还行\n".encode())
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "带BOM\n第二行\n".encode())
    (tmp_path / "legacy.txt").write_bytes("这是GB18030编码的文件\n第二行：很好\n".encode("gb18030"))
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02\x03" * 100)
    (tmp_path / "empty.txt").write_bytes(b"")
    df = records(tmp_path)
    by = {lab: rows(g, "text", "line", "reason") for lab, g in df.groupby("label")}
    assert by["utf8"] == [
        ("好的", 1, None),
        ("bad \\xff\\xfe line", 2, "undecodable"),
        ("还行", 3, None),
    ]
    assert by["bom"] == [("带BOM", 1, None), ("第二行", 2, None)]
    assert by["legacy"] == [("这是GB18030编码的文件", 1, None), ("第二行：很好", 2, None)]
    assert by["binary"] == [("<binary file, 400 bytes>", None, "binary")]
    assert "empty" not in by  # an empty line file has no lines, hence no records


def test_declared_encoding(tmp_path):
    (tmp_path / "pos.txt").write_bytes("café crème\n".encode("latin-1"))
    assert records(tmp_path, encoding="latin-1")["text"].tolist() == ["café crème"]
    assert records(tmp_path, encoding="utf-8")["reason"].tolist() == ["undecodable"]
    # UTF-16 has NUL bytes: text when declared, binary when not
    (tmp_path / "pos.txt").write_bytes("好评\n第二行\n".encode("utf-16"))
    assert records(tmp_path, encoding="utf-16")["text"].tolist() == ["好评", "第二行"]
    assert records(tmp_path)["reason"].tolist() == ["binary"]
    with pytest.raises(InputError, match="ingest.encoding: unknown encoding 'utf-9'"):
        records(tmp_path, encoding="utf-9")


def test_a_one_megabyte_line_is_read_whole(tmp_path):
    (tmp_path / "pos.txt").write_text("好" * 1_000_000 + "\nshort\n", encoding="utf-8")
    df = records(tmp_path)
    assert df["text"].str.len().tolist() == [1_000_000, 5]


# ---------------------------------------------------------------------------------------------
# fastText


def test_fasttext_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(
        "__label__pos 很好 的书\n  __label__neg bad one  \nno label at all\n\n"
        "__label__pos __label__neg two labels\n__label__pos\n__label__neg 标签 __label__x 在中间\n",
        encoding="utf-8",
    )
    assert resolve_format(IngestParams(source=str(path))) == "fasttext"
    df = records(path)
    assert rows(df, "text", "label", "line", "reason") == [
        ("很好 的书", "pos", 1, None),
        ("bad one  ", "neg", 2, None),
        ("no label at all", None, 3, "malformed"),
        ("", None, 4, None),  # blank: ingest quarantines it as `empty`
        ("__label__pos __label__neg two labels", None, 5, "malformed"),  # original record kept
        ("", "pos", 6, None),
        ("标签 __label__x 在中间", "neg", 7, None),
    ]


def test_fasttext_directory_and_binary_file(tmp_path):
    (tmp_path / "a.ft").write_text("__label__a x\n", encoding="utf-8")
    (tmp_path / "b.ft").write_bytes(b"\x00\x00")
    df = records(tmp_path, format="fasttext")
    assert rows(df, "text", "label", "reason") == [
        ("x", "a", None),
        ("<binary file, 2 bytes>", None, "binary"),
    ]


# ---------------------------------------------------------------------------------------------
# CSV / TSV / JSONL / Parquet


def test_csv_columns_quoting_and_line_numbers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        'review,sentiment,part\n"good, really",pos,train\n差,neg,test\nno label,,train\n"say ""hi""",pos,validation\n',
        encoding="utf-8",
    )
    df = records(path, text_column="review", label_column="sentiment", split_column="part")
    assert rows(df, "text", "label", "split", "line") == [
        ("good, really", "pos", "train", 2),
        ("差", "neg", "test", 3),
        ("no label", "", "train", 4),
        ('say "hi"', "pos", "validation", 5),
    ]


def test_csv_missing_column_names_the_column_and_the_columns_found(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,sentiment\nhello,pos\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        records(path)
    msg = str(err.value)
    assert "['label']" in msg and "['text', 'sentiment']" in msg and str(path) in msg


def test_tsv_keeps_quotes_literally(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text('text\tlabel\n"quoted" text\tpos\nit\'s 好\tneg\n', encoding="utf-8")
    assert rows(records(path), "text", "label") == [('"quoted" text', "pos"), ("it's 好", "neg")]


def test_csv_in_gb18030_and_undecodable_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\n很好,正面\n".encode("gb18030"))
    assert rows(records(path), "text", "label") == [("很好", "正面")]
    path.write_bytes(b"text,label\n\xff\xff,pos\n")
    with pytest.raises(InputError, match="not decodable"):
        records(path)


def test_jsonl_with_malformed_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "hello", "label": "pos", "extra": 1}\n{not json\n\n[1, 2]\n'
        '{"text": "no label"}\n{"label": "neg"}\n{"text": {"nested": true}, "label": 3}\n',
        encoding="utf-8",
    )
    df = records(path)
    assert rows(df, "text", "label", "line", "reason") == [
        ("hello", "pos", 1, None),
        ("{not json", None, 2, "malformed"),
        ("", None, 3, None),
        ("[1, 2]", None, 4, "malformed"),
        ("no label", None, 5, None),
        (None, "neg", 6, "malformed"),
        ('{"nested": true}', "3", 7, None),
    ]


def test_a_jsonl_line_nested_past_the_stack_is_a_malformed_record_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine", "label": "pos"}\n' + "[" * 100_000 + "\n", encoding="utf-8")
    df = records(path)
    assert rows(df, "text", "label", "line", "reason")[0] == ("fine", "pos", 1, None)
    assert rows(df, "label", "line", "reason")[1] == (None, 2, "malformed")


def test_jsonl_missing_column_names_the_column_and_the_columns_found(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"content": "x", "label": "pos"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        records(path)
    assert "['text']" in str(err.value) and "['content', 'label']" in str(err.value)
    with pytest.raises(InputError, match="'sentiment'"):
        records(path, text_column="content", label_column="sentiment")


def test_parquet_source_and_directory_of_parquet(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(
        pa.table({"body": ["a", None, "c"], "y": [1, 0, 1], "s": ["train", None, "test"]}),
        src / "part-0.parquet",
    )
    pq.write_table(pa.table({"body": ["d"], "y": [0], "s": ["valid"]}), src / "part-1.parquet")
    assert resolve_format(IngestParams(source=str(src))) == "parquet"
    df = records(src, text_column="body", label_column="y", split_column="s")
    assert rows(df, "text", "label", "split", "line") == [
        ("a", "1", "train", 1),
        (None, "0", None, 2),
        ("c", "1", "test", 3),
        ("d", "0", "valid", 1),
    ]
    with pytest.raises(InputError, match=r"\['text'\] not found; columns are \['body', 'y', 's'\]"):
        records(src, label_column="y")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet"):
        records(tmp_path / "broken.parquet")


def test_unknown_or_missing_source(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        records(tmp_path / "missing")
    (tmp_path / "data.xyz").write_text("?", encoding="utf-8")
    with pytest.raises(InputError, match="cannot tell the format"):
        records(tmp_path / "data.xyz")
