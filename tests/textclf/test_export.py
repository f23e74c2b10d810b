"""export: ONNX graphs that reproduce the torch model (parity), their int8 variant, the stage's
files and failure, and `--runtime onnx` prediction."""

from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import onnx
import pytest
import torch

import textclf.onnx
from stages import export as export_stage
from tests.pipelines import build_pipeline, jsonl
from textclf.artifacts import write_parquet
from textclf.bundle import BundleError, load_bundle, save_bundle
from textclf.cli import main
from textclf.evaluate import model_proba
from textclf.onnx import TOLERANCE, export, graph_module
from textclf.onnx_runtime import FP32, INT8, OnnxClassifier
from textclf.predict import Predictor

# documents the test split lacks: nothing left after cleaning, only unknown tokens, very long
EDGE_TEXTS = ["!!! 123 ...", "zzqx wvut 𠀀𠀁", "房间很好 " * 300, "退货", "<b></b>"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("bag"))


def labels_of(pipe):
    return pipe.parts["test"]["label"].to_numpy(dtype=object)


@pytest.mark.parametrize(
    "train",
    [
        {},
        {"bag": {"embed_dim": 16, "weighting": "idf"}, "epochs": 2},
        {"bag": {"embed_dim": 16, "weighting": "idf", "hidden_dim": 8}, "bigrams": "none", "epochs": 2},
        {
            "model": "cnn",
            "cnn": {"embed_dim": 16, "num_filters": 8, "kernel_sizes": (2, 3), "max_len": 12},
            "epochs": 2,
        },
        {"model": "linear"},
        {"model": "linear", "linear": {"nb_mix": 0.0, "sublinear_tf": False}},
    ],
    ids=["bag-hashed-bigrams", "bag-idf", "bag-idf-hidden", "cnn", "linear", "linear-lr-only"],
)
def test_fp32_graph_reproduces_torch_and_int8_is_reported(tmp_path, bag, train):
    pipe = build_pipeline(tmp_path / "pipe", **train) if train else bag
    bundle = load_bundle(pipe.bundle)
    out = tmp_path / "onnx"
    report = export(bundle, pipe.tokens(), labels_of(pipe), out)
    assert report["passed"] and report["parity_max_abs_diff"] <= TOLERANCE
    assert report["n"] == len(pipe.parts["test"])
    torch_p = model_proba(bundle, pipe.tokens())
    y = np.array([bundle.labels.index(v) for v in labels_of(pipe)])
    assert report["torch"]["accuracy"] == pytest.approx((torch_p.argmax(1) == y).mean())
    assert report["int8"]["accuracy_delta"] == pytest.approx(report["int8"]["accuracy"] - report["torch"]["accuracy"])
    # the int8 graph really holds 8-bit weights (Gather tables are quantised to uint8)
    int8 = onnx.load(str(out / INT8))
    assert any(
        t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and t.name.endswith("_quantized")
        for t in int8.graph.initializer
    )
    # and on documents the test split lacks, through the Predictor (raw text → ONNX Runtime)
    onnx_pred = Predictor(bundle, runtime="onnx", onnx_path=out / FP32)
    torch_pred = Predictor(bundle)
    texts = [*pipe.raw_texts()[:20], *EDGE_TEXTS]
    np.testing.assert_allclose(onnx_pred.predict_proba(texts), torch_pred.predict_proba(texts), rtol=0, atol=TOLERANCE)
    assert Predictor(bundle, runtime="onnx", onnx_path=out / INT8).predict(texts[:3])[0]["label"] in bundle.labels


def test_the_stage_writes_graphs_and_report(bag, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(bag.bundle, repo / "models" / "classifier")
    write_parquet(bag.parts["test"], repo / "data" / "processed" / "test.parquet")
    monkeypatch.chdir(repo)
    export_stage.main()
    report = json.loads((repo / "reports" / "export.json").read_text(encoding="utf-8"))
    assert report["passed"] is True and report["parity_max_abs_diff"] <= TOLERANCE
    assert set(report) >= {"tolerance", "torch", "fp32", "int8", "bundle_sha256", "size_bytes"}
    assert {p.name for p in (repo / "models" / "onnx").iterdir()} == {FP32, INT8}
    # `textclf predict --runtime onnx` picks the default graph up and agrees with torch
    texts = bag.raw_texts()[:10]
    assert main(["predict", "--runtime", "onnx", *texts]) == 0
    onnx_out = jsonl(capsys.readouterr().out)
    assert main(["predict", *texts]) == 0
    torch_out = jsonl(capsys.readouterr().out)
    assert [r["label"] for r in onnx_out] == [r["label"] for r in torch_out]
    for a, b in zip(onnx_out, torch_out, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=TOLERANCE)
    assert main(["predict", "--runtime", "onnx", "--onnx", "models/onnx/model.int8.onnx", *texts]) == 0
    assert len(jsonl(capsys.readouterr().out)) == 10


def test_the_stage_fails_when_the_graph_is_not_the_model(bag, tmp_path, monkeypatch, caplog):
    repo = tmp_path / "repo"
    shutil.copytree(bag.bundle, repo / "models" / "classifier")
    write_parquet(bag.parts["test"], repo / "data" / "processed" / "test.parquet")
    monkeypatch.chdir(repo)
    real = graph_module

    def broken(model):  # an export bug: the graph's output layer is off by a little
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.head[-1].bias += torch.tensor([0.01, -0.01])
        return real(model)

    monkeypatch.setattr(textclf.onnx, "graph_module", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        export_stage.main()
    assert exit_info.value.code == 4  # the fp32 parity contract
    assert "differ from torch by up to" in caplog.text and "tolerance 0.0001" in caplog.text
    assert not (repo / "models" / "onnx").exists()  # nothing half-checked is left as the output
    report = json.loads((repo / "reports" / "export.json").read_text(encoding="utf-8"))
    assert report["passed"] is False and report["parity_max_abs_diff"] > TOLERANCE


def test_graphs_are_tied_to_their_bundle(bag, tmp_path):
    out = tmp_path / "onnx"
    export(load_bundle(bag.bundle), bag.tokens(), labels_of(bag), out)
    # a retrained model: same config and vocabulary, other weights
    b = load_bundle(bag.bundle)
    other = save_bundle(tmp_path / "other", {k: v + 0.01 for k, v in b.state_dict.items()}, b.config, b.vocab)
    with pytest.raises(BundleError, match="exported from another bundle"):
        Predictor(other, runtime="onnx", onnx_path=out / FP32)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(BundleError, match="not an ONNX model|not a textclf ONNX export"):
        OnnxClassifier(tmp_path / "junk.onnx")
    # weights in an external file could be read from anywhere: refused
    proto = onnx.load(str(out / FP32))
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save_model(
        proto,
        str(ext / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    with pytest.raises(BundleError, match="external"):
        OnnxClassifier(ext / "m.onnx", load_bundle(bag.bundle))


def test_a_graph_of_another_textclf_version_is_refused_with_what_to_do(bag, tmp_path):
    out = tmp_path / "onnx"
    export(load_bundle(bag.bundle), bag.tokens(), labels_of(bag), out)
    proto = onnx.load(str(out / FP32))
    for p in proto.metadata_props:
        if p.key == "textclf.format":
            p.value = "textclf-onnx/1"
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(BundleError, match=r"another textclf version .* rerun `dvc repro export`"):
        OnnxClassifier(tmp_path / "old.onnx", load_bundle(bag.bundle))


def test_the_linear_graph_takes_the_count_matrix_and_no_unique_or_loop(tmp_path):
    pipe = build_pipeline(tmp_path / "pipe", model="linear")
    out = tmp_path / "onnx"
    export(load_bundle(pipe.bundle), pipe.tokens(), labels_of(pipe), out)
    graph = onnx.load(str(out / FP32)).graph
    assert [i.name for i in graph.input] == ["ids", "offsets", "counts"]
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Unique", "Loop", "SequenceInsert"}, ops
