"""`textclf labels suspects|fix|accept`: the queue printed, corrections appended, user data kept."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from textclf import cli
from textclf.artifacts import write_parquet
from textclf.labels import read_corrections
from textclf.paths import CORRECTIONS, DOCUMENTS, SUSPECTS

A, B, C = "0123456789abcdef", "fedcba9876543210", "00000000000000aa"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_parquet(
        pd.DataFrame({"doc_id": [A, B, C], "label": ["pos", "neg", "pos"]}).astype("str"),
        DOCUMENTS,
    )
    write_parquet(
        pd.DataFrame(
            {
                "rank": [1, 2, 3],
                "doc_id": [A, B, C],
                "split": ["train", "test", "train"],
                "label": ["pos", "neg", "pos"],
                "suggested": ["neg", "pos", "neg"],
                "self_confidence": [0.01, 0.02, 0.03],
                "text": ["这本书真得很不错", "vista不会用,明天就换成XP", "x" * 500],
            }
        ),
        SUSPECTS,
    )
    return tmp_path


def test_suspects_prints_the_queue_filtered_and_cut(project, capsys):
    assert cli.main(["labels", "suspects", "--top", "2", "--width", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and A in out[0] and "pos -> neg" in out[0] and B in out[1]
    assert cli.main(["labels", "suspects", "--split", "test"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and B in out[0]
    assert cli.main(["labels", "suspects", "--json", "--top", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["doc_id"] for r in rows] == [A, B, C] and rows[0]["text"] == "这本书真得很不错"


def test_suspects_before_the_stage_ran_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["labels", "suspects"]) == 2
    assert "reports/labels/suspects.parquet: not found (run the stage that writes it" in capsys.readouterr().err


def test_fix_and_accept_create_then_append(project, capsys):
    assert cli.main(["labels", "fix", A, "neg", "--note", "praise, filed as pos", "--reviewer", "ana"]) == 0
    assert "relabelled pos -> neg" in capsys.readouterr().out
    assert cli.main(["labels", "accept", B, "--reviewer", "bo"]) == 0
    assert "confirmed as neg" in capsys.readouterr().out
    df = read_corrections(CORRECTIONS)
    assert df[["doc_id", "label", "note", "reviewer"]].values.tolist() == [
        [A, "neg", "praise, filed as pos", "ana"],
        [B, "neg", "accepted", "bo"],
    ]


def test_fix_keeps_the_users_rows_byte_for_byte(project):
    CORRECTIONS.parent.mkdir(parents=True)
    mine = '\ufefflabel,doc_id,note\r\n"pos",00000000000000aa,"kept ""as is"""'  # CRLF, no final newline
    CORRECTIONS.write_bytes(mine.encode("utf-8"))
    assert cli.main(["labels", "fix", B, "pos", "--note", "sarcasm", "--reviewer", ""]) == 0
    data = CORRECTIONS.read_bytes()
    assert data.startswith(mine.encode("utf-8"))
    assert data.endswith(b"pos,fedcba9876543210,sarcasm\n")  # the file's own column order
    assert read_corrections(CORRECTIONS)["doc_id"].tolist() == [C, B]
    # a reviewer the file has no column for is refused, not dropped
    assert cli.main(["labels", "accept", A, "--reviewer", "ana"]) == 2
    assert CORRECTIONS.read_bytes() == data


def test_an_edit_saved_while_fix_runs_survives(project, monkeypatch):
    """Issue 24: `fix` appends in place. A hand edit saved after the command read the file and
    before it wrote its row is kept (a rewrite-and-rename, the old way, lost it)."""
    import csv

    from textclf import labels

    CORRECTIONS.parent.mkdir(parents=True)
    CORRECTIONS.write_text("doc_id,label,note,reviewer\n" + f"{C},neg,first,ana\n", encoding="utf-8")
    real_writer = csv.writer

    def writer_after_a_hand_edit(*args, **kwargs):  # the command is formatting its row now
        with open(CORRECTIONS, "a", encoding="utf-8") as f:
            f.write(f"{B},pos,saved by hand meanwhile,bo\n")
        return real_writer(*args, **kwargs)

    monkeypatch.setattr(labels.csv, "writer", writer_after_a_hand_edit)
    assert cli.main(["labels", "fix", A, "neg", "--reviewer", "cy"]) == 0
    monkeypatch.setattr(labels.csv, "writer", real_writer)
    rows = read_corrections(CORRECTIONS)[["doc_id", "note"]].values.tolist()
    assert rows == [[C, "first"], [B, "saved by hand meanwhile"], [A, ""]], rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fix", "0000000000000bad", "pos"], "not an ingested document"),
        (["fix", A, "maybe"], "label 'maybe' is not a label of the corpus (neg, pos)"),
        (["accept", "not-an-id"], "not an ingested document"),
    ],
)
def test_bad_fix_or_accept_is_refused_and_writes_nothing(project, capsys, argv, message):
    CORRECTIONS.parent.mkdir(parents=True)
    CORRECTIONS.write_text("doc_id,label\n", encoding="utf-8")
    assert cli.main(["labels", *argv]) == 2
    assert message in capsys.readouterr().err
    assert CORRECTIONS.read_text(encoding="utf-8") == "doc_id,label\n"


def test_an_unparseable_corrections_file_is_left_alone(project, capsys):
    CORRECTIONS.parent.mkdir(parents=True)
    CORRECTIONS.write_text("doc_id,label\nbroken-row\n", encoding="utf-8")
    assert cli.main(["labels", "fix", A, "neg"]) == 2
    assert "line 2" in capsys.readouterr().err
    assert CORRECTIONS.read_text(encoding="utf-8") == "doc_id,label\nbroken-row\n"
