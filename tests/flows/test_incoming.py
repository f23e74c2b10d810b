"""The new-data flow on a temp git + DVC repo.

The gate needs a test metric that new data can move either way without training a model, so the
repo gets one extra DVC stage, `score`, whose "macro_f1" is the share of `pos` documents: more
positive documents raise it, a batch of negative ones lowers it. Everything else is real: the
ingest contract check, `dvc add`, the pipeline flow, git commits, `dvc push` to a local remote,
`dvc checkout` on restore.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.incoming.flow import incoming
from flows.incoming.gate import gate
from tests.fixtures import run
from tests.flows.conftest import commit_all
from tests.flows.incoming_support import GATE, drop, head, incoming_artifact, lines, tracked_changes


@pytest.fixture()
def repo(scored_template, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(scored_template, dest, symlinks=True)
    run(["dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "remote")], dest)
    return dest


def test_accepted_file_is_promoted_and_a_rejected_one_quarantined(repo, tmp_path):
    # the stand-in stage's output plays the model in the registry (dvc.yaml artifacts:)
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["artifacts"] = {"classifier": {"path": "reports/score.json", "type": "model"}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commit_all(repo, "declare the stand-in model")
    raw_pos = (repo / "data/raw/pos.txt").read_bytes()
    before = head(repo)
    drop(repo, "pos.txt", lines("新到的评论", "很好满意推荐", 40))
    drop(repo, "broken.txt", b"\x00\x01\x02 not text \x00" * 20)

    state = incoming(repo=str(repo), **GATE, return_state=True)
    assert state.is_completed()
    out = state.result()

    # the rejected file: quarantined with the reason beside it, never in the raw data
    assert [v["file"] for v in out["rejected"]] == ["broken.txt"]
    reason = (repo / "data/quarantine/broken.txt.reason.txt").read_text()
    assert "binary" in reason and (repo / "data/quarantine/broken.txt").exists()
    assert not (repo / "data/raw/broken.txt").exists()

    # the accepted file: in the raw data, pipeline rerun, promoted in one commit
    assert [v["file"] for v in out["accepted"]] == ["pos.txt"]
    assert out["promoted"] and out["decision"]["new"] > out["decision"]["committed"] == 0.5
    raw = (repo / "data/raw/pos.txt").read_bytes()
    assert raw.startswith(raw_pos) and raw.count(b"\n") == raw_pos.count(b"\n") + 40
    assert head(repo) != before and out["commit"] == run(["git", "rev-parse", "--short", "HEAD"], repo).stdout.strip()
    message = run(["git", "log", "-1", "--format=%B"], repo).stdout
    assert "promote new data (pos.txt)" in message and "test.macro_f1 0.5000 → 0.5" in message
    committed = run(["git", "show", "--name-status", "--format=", "HEAD"], repo).stdout
    assert "data/raw.dvc" in committed and "dvc.lock" in committed and "reports/score.json" in committed
    assert "D\tdata/raw/pos.txt" in committed  # raw data moved from git to DVC
    assert tracked_changes(repo) == ""
    assert "up to date" in run(["dvc", "status", "--with-deps", "score"], repo).stdout
    assert not (repo / "data/incoming/pos.txt").exists()
    assert out["pushed_to"] == "store" and any((tmp_path / "remote").rglob("*"))
    md = incoming_artifact(state)
    assert "Promoted in commit" in md and "broken.txt" in md
    # the promoted model is registered (GTO tags on the promotion commit) and in stage prod
    assert out["registered"] == ["classifier@v0.0.1", "classifier#prod#1"]
    assert set(run(["git", "tag", "--points-at", "HEAD"], repo).stdout.split()) == set(out["registered"])


def test_a_worse_metric_is_not_promoted_and_the_workspace_is_restored(repo):
    before = {
        p: (repo / p).read_bytes()
        for p in (
            "dvc.lock",
            "params.yaml",
            "data/raw/neg.txt",
            "reports/score.json",
            "data/interim/documents.parquet",
        )
    }
    sha = head(repo)
    drop(repo, "neg.txt", lines("刚收到的评论", "很差失望退货", 200))

    state = incoming(repo=str(repo), tolerance=0.01, **GATE, return_state=True)
    assert state.is_completed()
    out = state.result()
    assert [v["file"] for v in out["accepted"]] == ["neg.txt"]  # passed the contract check...
    assert not out["promoted"]  # ...but the retrained score dropped 0.5 → 0.375
    assert out["decision"]["new"] == pytest.approx(300 / 800)
    assert "worse than the committed model" in out["decision"]["reason"]

    assert head(repo) == sha  # nothing committed
    assert tracked_changes(repo) == ""
    assert not (repo / "data/raw.dvc").exists()  # the git → DVC move was undone too
    assert {p: (repo / p).read_bytes() for p in before} == before
    assert "up to date" in run(["dvc", "status", "--with-deps", "score"], repo).stdout
    reason = (repo / "data/quarantine/neg.txt.reason.txt").read_text()
    assert "promotion gate" in reason and "0.5000 → 0.3750" in reason
    assert "Not promoted" in incoming_artifact(state)


def test_no_new_files_is_a_quick_no_op(repo):
    sha = head(repo)
    out = incoming(repo=str(repo), **GATE)
    assert out["accepted"] == out["rejected"] == [] and not out["promoted"]
    assert head(repo) == sha and tracked_changes(repo) == ""


@pytest.mark.parametrize(
    ("committed", "new", "promote"),
    [
        (0.80, 0.795, True),  # within tolerance
        (0.80, 0.78, False),  # worse by more than tolerance
        (None, 0.70, True),  # nothing committed yet
        (0.80, None, False),  # the run lost its metrics
        (None, None, True),  # no evaluate stage yet: data contracts alone
    ],
)
def test_gate(committed, new, promote):
    def metrics(v):
        return None if v is None else {"test": {"macro_f1": v}}

    assert gate(metrics(committed), metrics(new), "test.macro_f1", 0.01).promote is promote


def test_the_gate_compares_both_models_on_the_committed_test_documents(predicting_template, tmp_path):
    """The metrics file says 0.9 before and after; the committed test documents say the new
    model gets them all wrong. The gate follows the documents."""
    repo = tmp_path / "repo"
    shutil.copytree(predicting_template, repo, symlinks=True)
    gate_args = {
        **GATE,
        "target": "predict",
        "predictions_file": "reports/standin/predictions.parquet",
    }
    drop(repo, "pos.txt", lines("新到的评论", "很好喜欢", 40))
    out = incoming(repo=str(repo), tolerance=0.01, **gate_args)
    assert out["promoted"], out["decision"]
    n = out["decision"]["documents"]
    assert n and n > 20 and out["decision"]["committed"] == out["decision"]["new"] == 1.0
    assert f"on the {n} committed test documents" in out["decision"]["reason"]

    sha = head(repo)
    drop(repo, "neg.txt", lines("差评风暴", "很差失望", 40))
    out = incoming(repo=str(repo), tolerance=0.01, **gate_args)
    assert not out["promoted"]
    assert out["decision"]["committed"] == 1.0 and out["decision"]["new"] == 0.0
    assert out["decision"]["documents"] > n  # the first batch's test documents are committed now
    assert "worse than the committed model" in out["decision"]["reason"]
    assert head(repo) == sha and tracked_changes(repo) == ""


def _preds(doc_ids, labels, predicted):
    import pandas as pd

    return pd.DataFrame({"doc_id": doc_ids, "label": labels, "predicted": predicted})


def test_gate_same_documents_scores_only_the_documents_both_runs_predicted():
    from flows.incoming.gate import gate_same_documents

    committed = _preds(["a", "b", "c", "d"], ["pos", "neg", "pos", "neg"], ["pos", "neg", "pos", "neg"])
    # the new run: "d" gone (e.g. a label conflict), "e"/"f" new and right, "a"/"b" now wrong
    current = _preds(
        ["a", "b", "c", "e", "f"],
        ["pos", "neg", "pos", "pos", "neg"],
        ["neg", "pos", "pos", "pos", "neg"],
    )
    d = gate_same_documents(committed, current, "test.accuracy", 0.01, min_documents=3)
    assert (d.promote, d.committed, d.new, d.documents) == (False, 1.0, pytest.approx(1 / 3), 3)
    f1 = gate_same_documents(committed, current, "test.macro_f1", 0.01, min_documents=3)
    assert f1.committed == 1.0 and f1.new == pytest.approx(0.25) and not f1.promote  # pos F1 0.5, neg 0
    assert gate_same_documents(committed, current, "test.accuracy", 0.7, min_documents=3).promote  # wide tolerance
    # when it cannot apply it says why, and the metrics-file gate decides
    assert "no committed" in gate_same_documents(None, current, "test.macro_f1", 0.01)
    assert "no new" in gate_same_documents(committed, None, "test.macro_f1", 0.01)
    assert "did not produce new" in gate_same_documents(committed, committed.iloc[::-1], "test.macro_f1", 0.01)
    assert "only 3 committed" in gate_same_documents(committed, current, "test.macro_f1", 0.01)  # < 30
    assert "computes only" in gate_same_documents(committed, current, "test.roc_auc", 0.01)
    assert not isinstance(gate_same_documents(committed, current, "test.macro_f1", 0.01, min_documents=3), str)


def test_a_class_only_the_new_model_knows_counts_as_its_errors_not_as_an_f1_of_zero():
    """New data may add a label (allow_new_labels): the committed test documents never have it
    as truth, so one stray prediction of it must cost one error, not a whole class's F1."""
    from flows.incoming.gate import gate_same_documents

    ids = [f"d{i}" for i in range(100)]
    truth = ["pos", "neg"] * 50
    committed = _preds(ids, truth, truth)
    current = _preds(ids, truth, ["neu"] + truth[1:])
    d = gate_same_documents(committed, current, "test.macro_f1", 0.01)
    assert d.documents == 100 and d.committed == 1.0
    assert d.new == pytest.approx((2 * 49 / 99 + 1.0) / 2)  # pos recall 49/50, neg perfect
    assert d.promote


def test_the_fallback_gate_says_why_it_did_not_compare_the_same_documents():
    from flows.incoming.gate import decide

    d = decide(None, None, {"test": {"macro_f1": 0.8}}, {"test": {"macro_f1": 0.75}}, "test.macro_f1", 0.01)
    assert not d.promote and d.documents is None
    assert "metrics files compared; not on the same documents: no committed test predictions" in d.reason


def test_place_appends_lines_in_the_raw_files_encoding_and_never_edits_in_place(tmp_path):
    from flows.incoming.flow import landing_files
    from flows.incoming.intake import RawSpec, place

    raw, landing = tmp_path / "raw", tmp_path / "incoming"
    raw.mkdir()
    landing.mkdir()
    old = raw / "neg.txt"
    old.write_bytes("旧的评论很差".encode("gb18030"))  # a legacy GB18030 file, no final newline
    inode = old.stat().st_ino
    (landing / "neg.txt").write_bytes("\ufeff新的评论太慢\n".encode())  # UTF-8 with a BOM
    (landing / "pos.txt").write_text("新标签文件很好\n", encoding="utf-8")
    (landing / "upload.txt.part").write_text("still copying")
    (landing / ".upload.txt.x1Yz").write_text("rsync's temp name")
    spec = RawSpec("raw", "text_dir")

    files = landing_files(landing, min_age_s=0)
    assert [p.name for p in files] == ["neg.txt", "pos.txt"]  # partial uploads wait
    assert landing_files(landing, min_age_s=3600) == []  # too fresh: next run

    assert place(landing / "neg.txt", tmp_path, spec) == []
    assert old.read_bytes().decode("gb18030") == "旧的评论很差\n新的评论太慢\n"
    assert old.stat().st_ino != inode  # replaced by rename: a DVC cache linked to it is untouched
    assert place(landing / "pos.txt", tmp_path, spec) == [str(raw / "pos.txt")]  # a new label file


def test_a_declared_encoding_is_used_for_appended_lines(tmp_path):
    from flows.incoming.intake import reencode

    old = "café ancien\n".encode("latin-1")
    new = "très bien\n".encode("latin-1")
    assert reencode(new, old, "latin-1") == new  # not rewritten as mojibake
    assert reencode("très bien\n".encode(), old, "auto") == "très bien\n".encode()


def test_every_change_to_the_raw_folder_is_journalled_and_undone_only_if_untouched(tmp_path):
    from flows.incoming.intake import RawSpec, place
    from flows.incoming.transaction import Journal, undo_raw

    root = tmp_path
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "neg.txt").write_text("旧的\n", encoding="utf-8")
    (raw / "pos.txt").write_text("好的\n", encoding="utf-8")
    incoming = tmp_path / "copies"
    incoming.mkdir()
    for name, text in (("neg.txt", "新的\n"), ("pos.txt", "也好\n"), ("neu.txt", "一般\n")):
        (incoming / name).write_text(text, encoding="utf-8")
    journal = Journal(run="r1", head="x", staging="")
    spec = RawSpec("data/raw", "text_dir")
    for name in ("neg.txt", "pos.txt", "neu.txt"):
        place(incoming / name, root, spec, journal)
    on_disk = Journal.load(root)
    assert [r["path"] for r in on_disk.appended] == ["data/raw/neg.txt", "data/raw/pos.txt"]
    assert [r["path"] for r in on_disk.created] == ["data/raw/neu.txt"]
    # the user edits pos.txt while the run goes on: that file is left as the user made it
    (raw / "pos.txt").write_text("好的\n也好\n用户的修改\n", encoding="utf-8")
    kept = undo_raw(root, on_disk)
    assert kept == ["data/raw/pos.txt"]
    assert (raw / "neg.txt").read_text(encoding="utf-8") == "旧的\n"
    assert (raw / "pos.txt").read_text(encoding="utf-8") == "好的\n也好\n用户的修改\n"
    assert not (raw / "neu.txt").exists()


def test_split_layouts_refuse_top_level_files_and_split_named_items(tmp_path):
    from flows.incoming.intake import RawSpec, shape_problem

    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    new = tmp_path / "neg.txt"
    new.write_text("新的\n", encoding="utf-8")
    spec = RawSpec("data/raw", "text_dir")
    assert shape_problem(new, spec, tmp_path) is None
    (tmp_path / "train").mkdir()
    assert "named like a split" in shape_problem(tmp_path / "train", spec, tmp_path)
    (raw / "train").mkdir()
    problem = shape_problem(new, spec, tmp_path)
    assert problem and "train/valid/test" in problem


def test_a_fixed_reference_stops_promotions_drifting_down_a_tolerance_at_a_time(monkeypatch):
    """Commits c1 (the first model) → c2 → HEAD, each within tolerance of the one before. A new
    model within tolerance of HEAD but below c1 by more passes `head` and fails `first`/`best`."""
    import flows.incoming.gate as gate_mod
    from flows.incoming.gate import decide_against

    ids = [f"d{i}" for i in range(100)]
    truth = ["pos", "neg"] * 50

    def preds(wrong: int):
        return _preds(
            ids,
            truth,
            [("neg" if t == "pos" else "pos") if i < wrong else t for i, t in enumerate(truth)],
        )

    history = {"c1": preds(0), "c2": preds(1), "HEAD": preds(2)}
    monkeypatch.setattr(
        gate_mod,
        "reference_commits",
        lambda root, ref, pf: ["HEAD"] if ref == "head" else (["c1"] if ref == "first" else ["c1", "c2"]),
    )
    monkeypatch.setattr(gate_mod.report, "committed_predictions", lambda root, pf, rev="HEAD": history[rev])
    monkeypatch.setattr(gate_mod.report, "committed_metrics", lambda root, mf, rev="HEAD": None)
    new = preds(3)
    args = dict(
        current_preds=new,
        current_metrics=None,
        metric="test.accuracy",
        tolerance=0.015,
        predictions_file="p",
        metrics_file="m",
        head_preds=history["HEAD"],
        head_metrics=None,
    )
    assert decide_against(Path("."), "head", **args).promote
    first = decide_against(Path("."), "first", **args)
    assert not first.promote and first.reference == "c1" and "first reference" in first.reason
    best = decide_against(Path("."), "best", **args)
    assert not best.promote and best.committed == 1.0


def test_the_flow_takes_every_option_the_command_line_offers():
    import inspect

    from flows.incoming.flow import IncomingOptions, build_parser

    assert set(inspect.signature(incoming.fn).parameters) == set(IncomingOptions.model_fields)
    args = {k: v for k, v in vars(build_parser().parse_args(["--no-register"])).items() if v is not None}
    inspect.signature(incoming.fn).bind(**IncomingOptions(**args).model_dump())  # what main() passes


@pytest.mark.parametrize(
    "option",
    [
        {"landing": "/tmp"},
        {"quarantine_dir": "../x"},
        {"metrics_file": "/etc/passwd"},
        {"params": ["dvc.yaml:stages.ingest.cmd=id"]},
    ],
)
def test_untrusted_flow_parameters_are_refused_before_anything_is_claimed(repo, option):
    """Issue 27: a run's parameters (from anyone who reaches the Prefect API) cannot name folders
    outside the repository or params files other than params.yaml; the refusal is a params error
    (exit 3) before any landing item is claimed or any file written."""
    from textclf.errors import ParamsError

    (repo / "data/incoming/pos").mkdir(parents=True, exist_ok=True)
    (repo / "data/incoming/pos/new.txt").write_text("great phone\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in (repo / "dvc.yaml", repo / "params.yaml")}
    state = incoming(repo=str(repo), min_age_s=0, **option, return_state=True)
    assert state.is_failed()
    with pytest.raises(ParamsError):
        state.result()
    assert (repo / "data/incoming/pos/new.txt").exists()  # not claimed
    assert {p: p.read_bytes() for p in before} == before


def test_a_served_deployment_runs_in_its_own_repository_only(repo, tmp_path, monkeypatch):
    from flows.pipeline import PINNED_REPO_ENV, resolve_repo
    from textclf.errors import ParamsError

    monkeypatch.setenv(PINNED_REPO_ENV, str(repo))
    assert resolve_repo(str(repo)) == repo.resolve()
    other = tmp_path / "other"
    other.mkdir()
    (other / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(ParamsError, match="this deployment runs in"):
        resolve_repo(str(other))


def test_the_drift_gate_holds_english_text_and_allow_drift_takes_it(repo, tmp_path):
    """A model beside the stand-in (a bundle trained here on sample reviews, its test split and
    test predictions where the pipeline writes them): English text dropped into the Chinese
    corpus is quarantined with a drift reason, and taken with allow_drift."""
    import pandas as pd

    from tests.fixtures import english, sample_docs
    from tests.pipelines import build_pipeline
    from textclf import paths
    from textclf.artifacts import write_parquet
    from textclf.predict import Predictor

    pipe = build_pipeline(tmp_path / "model", sample_docs(300), model="linear", bigrams="vocab")
    shutil.copytree(pipe.bundle, repo / paths.BUNDLE)
    for name in ("train", "test"):
        write_parquet(pipe.parts[name], repo / paths.PROCESSED / f"{name}.parquet")
    test = pipe.parts["test"]
    proba = Predictor(pipe.bundle).predict_proba(test["text"].tolist())
    pd.DataFrame({"doc_id": test["doc_id"], "prob_neg": proba[:, 0], "prob_pos": proba[:, 1]}).to_parquet(
        repo / paths.PREDICTIONS
    )
    before = head(repo)
    drop(repo, "pos.txt", "".join(t + "\n" for t in english(60)).encode("utf-8"))

    state = incoming(repo=str(repo), **GATE, return_state=True)
    out = state.result()
    assert not out["promoted"] and out["accepted"] == [] and head(repo) == before
    (rejected,) = out["rejected"]
    assert rejected["reason"].startswith("drift: OOV rate 1.00 > ")
    reason = (repo / "data/quarantine/pos.txt.reason.txt").read_text()
    assert "drift.max_oov_increase" in reason and "--allow-drift" in reason
    assert {c["name"]: c["held"] for c in out["drift"]}["oov"] is True
    md = incoming_artifact(state)
    assert "## Drift" in md and "| oov |" in md and "**held**" in md

    # taken on purpose: the same file, with allow_drift
    shutil.move(repo / "data/quarantine/pos.txt", repo / "data/incoming/pos.txt")
    out = incoming(repo=str(repo), **GATE, allow_drift=True)
    assert [v["file"] for v in out["accepted"]] == ["pos.txt"] and out["promoted"]
