"""Prediction: one code path with the pipeline, and the `textclf predict` command.

`build_pipeline` (tests/pipelines.py) runs the real stage cores in-process on a small corpus of
*raw* lines full of what ingest and clean rewrite, so a predictor that skipped or reordered a step
would see other tokens than the model was trained on.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest

from tests.pipelines import Pipeline, build_pipeline, jsonl
from textclf.bundle import BundleError, load_bundle, save_bundle
from textclf.cli import main
from textclf.evaluate import model_proba
from textclf.predict import Predictor


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return build_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def predictor(pipe) -> Predictor:
    return Predictor(pipe.bundle)


# =============================================================================================
# one code path with the pipeline


def test_the_corpus_exercises_normalisation_and_cleaning(pipe):
    raw = pipe.raw_texts()
    assert len(raw) >= 40
    # the raw lines differ from the stored (normalised) text, and some carry markup and links
    assert sum(r != t for r, t in zip(raw, pipe.parts["test"]["text"], strict=True)) >= len(raw) // 4
    assert any("<script>" in r for r in raw) and any("http://" in r for r in raw)


def test_predictor_tokens_equal_the_clean_stage_tokens(pipe, predictor):
    assert predictor.tokenize(pipe.raw_texts()).equals(pipe.tokens())


@pytest.mark.parametrize(
    "train",
    [
        None,
        {"bag": {"embed_dim": 16, "weighting": "idf"}, "bigrams": "none", "epochs": 2},
        {
            "model": "cnn",
            "cnn": {"embed_dim": 16, "num_filters": 8, "kernel_sizes": (2, 3), "max_len": 12},
            "epochs": 2,
        },
    ],
    ids=["bag-hashed-bigrams", "bag-idf", "cnn"],
)
def test_pipeline_predictions_and_predictor_on_raw_texts_agree(pipe, tmp_path, train):
    """The evaluate stage's probabilities (model_proba on the clean stage's test tokens) and the
    Predictor's on the raw lines: every label equal, probabilities equal to float precision."""
    p = build_pipeline(tmp_path, **train) if train else pipe
    bundle = load_bundle(p.bundle)
    expected = model_proba(bundle, p.tokens())
    got = Predictor(bundle).predict_proba(p.raw_texts())
    assert got.shape == expected.shape == (len(p.parts["test"]), 2)
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_predict_records(predictor):
    texts = ["房间很好，喜欢！", "手机很差，失望，退货", "<b>great</b> phone, love it"]
    records = predictor.predict(texts)
    assert [set(r) for r in records] == [{"label", "probabilities"}] * 3
    for r in records:
        assert list(r["probabilities"]) == ["neg", "pos"]
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    # minimum functionality: clear sentiment words get the right label
    assert [r["label"] for r in records[:2]] == ["pos", "neg"]
    # batched = one by one, in input order
    assert [predictor.predict([t])[0] for t in texts] == records


def test_invariance_to_what_cleaning_removes(predictor):
    base = predictor.predict_proba(["房间很好 喜欢"])
    for variant in [
        "房间很好 喜欢!!!",
        "  房间很好\t喜欢。",
        "<p>房间很好 喜欢</p>",
        "房间很好 喜欢 123",
        "房间很好\u200b 喜欢",
    ]:
        np.testing.assert_array_equal(predictor.predict_proba([variant]), base, err_msg=variant)


def test_edge_inputs(predictor):
    assert predictor.predict([]) == []
    # nothing left after cleaning: the model's prior, still one record
    [r] = predictor.predict(["!!! 123 ..."])
    assert r["label"] in ("neg", "pos")
    with pytest.raises(ValueError, match="strings"):
        predictor.predict(["ok", None])
    with pytest.raises(ValueError, match="strings"):
        predictor.predict([1, 2])


def test_incompatible_bundles_are_refused_clearly(pipe, tmp_path):
    bundle = load_bundle(pipe.bundle)

    def variant(**changes):
        config = {**bundle.config, **changes}
        return save_bundle(tmp_path / f"b{len(list(tmp_path.iterdir()))}", bundle.state_dict, config, bundle.vocab)

    with pytest.raises(BundleError, match="normalisation 'nfkc-v9'"):
        Predictor(variant(text={**bundle.config["text"], "normalize": "nfkc-v9"}))
    with pytest.raises(BundleError, match="text.clean is not valid"):
        Predictor(variant(text={"clean": {"tokenizer": "sentencepiece"}, "normalize": "nfkc-v1"}))
    with pytest.raises(BundleError, match="stopword list"):
        Predictor(
            variant(
                text={
                    "clean": {"stopwords_file": str(tmp_path / "gone.txt")},
                    "normalize": "nfkc-v1",
                }
            )
        )
    with pytest.raises(BundleError, match="no text settings"):
        Predictor(variant(text=None))
    with pytest.raises(BundleError, match="do not fit"):
        Predictor(variant(model={**bundle.config["model"], "embed_dim": 7}))
    with pytest.raises(BundleError, match="no model bundle"):
        Predictor(tmp_path / "missing")


def test_the_stopword_list_comes_from_the_bundle_never_from_the_path_it_names(pipe, tmp_path):
    """A config naming /dev/zero (reads forever) or a file edited after training: prediction
    uses the words recorded at training time and never opens the path."""
    bundle = load_bundle(pipe.bundle)
    text = bundle.config["text"]
    ref = Predictor(pipe.bundle)
    words = ["房"]  # Chinese tokens are characters
    for path in ("/dev/zero", str(tmp_path / "edited.txt")):
        (tmp_path / "edited.txt").write_text("很\n喜\n", encoding="utf-8")
        config = {
            **bundle.config,
            "text": {
                **text,
                "clean": {**text["clean"], "stopwords_file": path},
                "stopwords_extra": words,
            },
        }
        pred = Predictor(
            save_bundle(
                tmp_path / f"b{len(list(tmp_path.iterdir()))}",
                bundle.state_dict,
                config,
                bundle.vocab,
            )
        )
        assert "房" in pred.stopwords and "很" not in pred.stopwords
        assert pred.tokenize(["房间很好"]).to_pylist() == [["间", "很", "好"]]
    assert "房" not in ref.stopwords


def test_a_config_that_names_a_huge_table_is_refused_before_anything_is_allocated(pipe, tmp_path):
    bundle = load_bundle(pipe.bundle)
    config = {**bundle.config, "model": {**bundle.config["model"], "num_embeddings": 10**12}}
    path = save_bundle(tmp_path / "huge", bundle.state_dict, config, bundle.vocab)
    with pytest.raises(BundleError, match="describes other tensors"):
        Predictor(path)  # a 10^12 x 16 float table would be 64 TB: it fails on the shapes, not on memory


# =============================================================================================
# the command


def run_cli(capsys, *args, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_texts_as_arguments(pipe, predictor, capsys):
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "房间很好，喜欢！", "手机很差，退货")
    assert code == 0, err
    assert jsonl(out) == predictor.predict(["房间很好，喜欢！", "手机很差，退货"])


def test_cli_refuses_empty_text_arguments(pipe, capsys):
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "好", "  ")
    assert code == 2 and out == ""
    assert "[2] are empty" in err


def test_cli_agrees_with_the_pipeline_on_the_raw_test_file(pipe, tmp_path, capsys):
    raw = pipe.raw_texts()
    path = tmp_path / "test.txt"
    path.write_text("\n".join(raw) + "\n\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(path), "--batch-size", "7")
    assert code == 0, err
    expected = model_proba(load_bundle(pipe.bundle), pipe.tokens()).argmax(1)
    labels = load_bundle(pipe.bundle).labels
    records = jsonl(out)
    # one record per input row: the trailing blank line is an explicit skipped record
    assert [r["label"] for r in records[:-1]] == [labels[i] for i in expected]
    assert records[-1] == {"label": None, "probabilities": None, "skipped": "empty"}
    assert "1 blank row(s) have no label" in err


def test_cli_keeps_blank_rows_in_place_and_refuses_binary_input(pipe, tmp_path, capsys):
    """Issue 29: output row N is input row N (blank rows included, unless --skip-empty), in JSONL
    and CSV; a binary file is refused whatever --encoding says."""
    path = tmp_path / "in.txt"
    path.write_text("房间很好\n\n   \n手机很差\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(path))
    assert code == 0, err
    records = jsonl(out)
    assert len(records) == 4 and [r.get("skipped") for r in records] == [None, "empty", "empty", None]
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(path), "--format", "csv")
    rows = out.splitlines()
    assert len(rows) == 5 and rows[2].strip(",") == "" and rows[1].split(",")[0] in ("neg", "pos")
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(path), "--skip-empty")
    assert code == 0 and len(jsonl(out)) == 2 and "skipped 2 blank row(s)" in err
    csv_in = tmp_path / "in.csv"
    csv_in.write_text('text\n房间很好\n""\n手机很差\n', encoding="utf-8")
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(csv_in))
    assert code == 0 and [r.get("skipped") for r in jsonl(out)] == [None, "empty", None]
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02binary\x00" * 10)
    for enc in ("utf-8", "latin-1"):
        code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "--input", str(binary), "--encoding", enc)
        assert code == 2 and out == "" and "binary" in err and "Traceback" not in err


def test_cli_csv_and_jsonl_input_csv_output(pipe, predictor, tmp_path, capsys):
    texts = ['房间很好, "喜欢"', "手机很差\n退货", "<i>book</i> 不错"]
    csv_in = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2, 3], "review": texts}).to_csv(csv_in, index=False)
    jsonl_in = tmp_path / "in.jsonl"
    jsonl_in.write_text(
        "".join(json.dumps({"review": t, "n": i}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    out_file = tmp_path / "out.csv"
    code, _, err = run_cli(
        capsys,
        "--bundle",
        str(pipe.bundle),
        "-i",
        str(csv_in),
        "--column",
        "review",
        "--format",
        "csv",
        "-o",
        str(out_file),
    )
    assert code == 0, err
    got = pd.read_csv(out_file)
    want = predictor.predict(texts)
    assert list(got.columns) == ["label", "prob_neg", "prob_pos"]
    assert got["label"].tolist() == [r["label"] for r in want]
    np.testing.assert_allclose(got["prob_pos"], [r["probabilities"]["pos"] for r in want])
    code, out, err = run_cli(capsys, "--bundle", str(pipe.bundle), "-i", str(jsonl_in), "--column", "review")
    assert code == 0, err
    assert jsonl(out) == want


def test_cli_reads_stdin(pipe, predictor, capsys, monkeypatch):
    code, out, err = run_cli(
        capsys, "--bundle", str(pipe.bundle), stdin="房间很好\n退货 失望\n", monkeypatch=monkeypatch
    )
    assert code == 0, err
    assert jsonl(out) == predictor.predict(["房间很好", "退货 失望"])


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--bundle", "{tmp}/nope", "x"], "no model bundle here"),
        (None, ["--input", "{tmp}/missing.txt"], "missing.txt: not found"),
        ("empty.txt", ["--input", "{tmp}/empty.txt"], "no input texts"),
        ("latin1.txt", ["--input", "{tmp}/latin1.txt"], "not utf-8-sig text"),
        (
            "in.csv",
            ["--input", "{tmp}/in.csv", "--column", "body"],
            "no column 'body' (columns: text, label)",
        ),
        ("bad.jsonl", ["--input", "{tmp}/bad.jsonl"], "bad.jsonl:2: not valid JSON"),
        (None, ["--encoding", "klingon", "--input", "{tmp}/x"], "unknown encoding 'klingon'"),
        (None, ["--input", "{tmp}/x", "some text"], "not both"),
        (None, ["--runtime", "onnx", "--onnx", "{tmp}/none.onnx", "x"], "no ONNX model here"),
    ],
)
def test_cli_errors_are_one_clear_line(pipe, tmp_path, capsys, setup, args, message):
    files = {
        "empty.txt": b"\n  \n",
        "latin1.txt": "caf\u00e9 tr\u00e8s bien\n".encode("latin-1"),
        "in.csv": b"text,label\nok,pos\n,neg\n",
        "bad.jsonl": b'{"text": "ok"}\n{"text": \n',
    }
    if setup:
        (tmp_path / setup).write_bytes(files[setup])
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--bundle" not in args:
        args = ["--bundle", str(pipe.bundle), *args]
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


# =============================================================================================
# a serving image: `pip install 'textclf[serve]'` has no Prefect, DVC, Dask, pandera, Optuna or
# scikit-learn; predicting and serving never import them

SERVING_IMAGE = r"""
import json, sys
from fastapi.testclient import TestClient
from textclf import cli, serve
from textclf.predict import Predictor
bundle = sys.argv[1]
assert cli.main(["predict", "--bundle", bundle, "很好的书"]) == 0
app = serve.create_app(Predictor(bundle), metrics_path=None, run_path=None)
with TestClient(app) as client:
    r = client.post("/predict", json={"texts": ["很好的书", "太差了"]})
    assert r.status_code == 200, r.text
    print(json.dumps(r.json()))
PIPELINE_ONLY = {"prefect", "prefect_dask", "dvc", "dvclive", "scmrepo", "dask", "distributed", "pandera",
                 "optuna", "sklearn", "scipy", "filelock", "onnx"}
print(json.dumps(sorted(PIPELINE_ONLY & {m.split(".")[0] for m in sys.modules})))
"""


def test_predict_and_serve_need_no_pipeline_dependency(pipe):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", SERVING_IMAGE, str(pipe.bundle)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[0])["label"] in {"pos", "neg"}  # the predict command's JSONL
    assert len(json.loads(lines[-2])["predictions"]) == 2
    assert json.loads(lines[-1]) == []  # nothing imported that the serving image does not install
