"""Training: schedules, optimisation sanity, determinism, early stopping, resume."""

from __future__ import annotations

import pytest
import torch

from textclf.families.registry import family
from textclf.model import build_model, forward_batch
from textclf.params import TrainParams
from textclf.training.loop import class_weights, fit, lr_at, resolve_device
from textclf.training.run import prepare

CPU = torch.device("cpu")


def test_lr_schedules():
    assert lr_at(0, 100, 1.0, "none", 0) == 1.0
    assert lr_at(4, 100, 1.0, "none", 10) == pytest.approx(0.5)  # warm-up: (4+1)/10
    assert lr_at(10, 110, 1.0, "linear", 10) == pytest.approx(1.0)
    assert lr_at(60, 110, 1.0, "linear", 10) == pytest.approx(0.5)
    assert lr_at(60, 110, 1.0, "cosine", 10) == pytest.approx(0.5)
    assert lr_at(110, 110, 1.0, "cosine", 10) == pytest.approx(0.0)


def test_balanced_class_weights():
    w = class_weights(torch.tensor([0, 0, 0, 1]), 2, "balanced")
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights(torch.tensor([0, 1]), 2, "none") is None


def test_sparse_gradients_only_for_plain_sgd_bag():
    bag, cnn = family("bag"), family("cnn")
    assert bag.sparse_gradients(TrainParams(model="bag", optimizer="sgd", weight_decay=0.0))
    assert not bag.sparse_gradients(TrainParams(model="bag", optimizer="sgd", weight_decay=0.01))
    assert not bag.sparse_gradients(TrainParams(model="bag", optimizer="adam"))
    assert not bag.sparse_gradients(TrainParams(model="bag", optimizer="sgd", momentum=0.9, weight_decay=0.0))
    assert not cnn.sparse_gradients(TrainParams(model="cnn", optimizer="sgd", weight_decay=0.0))


def test_device_auto_is_cpu_without_cuda():
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("model", ["bag", "cnn"])
def test_overfits_a_tiny_batch(small_params, model, fixture_split, fixture_vocab):
    p = small_params.model_copy(update={"model": model})
    tr, _, cfg, _, _ = prepare(fixture_split[0], fixture_split[1], fixture_vocab, p)
    torch.manual_seed(0)
    net = build_model(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    idx = torch.arange(16)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(forward_batch(net, tr.ids, tr.offsets, idx), tr.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_training_learns_the_fixture(prepared, small_params):
    tr, va, cfg, _, _ = prepared
    result = fit(tr, va, cfg, small_params, CPU)
    assert result.state.best_f1 > 0.9
    assert len(result.state.history) == small_params.epochs


def test_cpu_training_is_deterministic(prepared, small_params):
    tr, va, cfg, _, _ = prepared
    a = fit(tr, va, cfg, small_params, CPU)
    b = fit(tr, va, cfg, small_params, CPU)
    assert a.state.history == b.state.history
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k])


def test_early_stopping_keeps_the_best_epoch(prepared, small_params):
    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(update={"epochs": 30, "patience": 2, "lr": 0.2})
    r = fit(tr, va, cfg, p, CPU)
    f1s = [h["valid_macro_f1"] for h in r.state.history]
    assert r.state.epoch < 30  # stopped early
    assert r.state.best_f1 == max(f1s)
    assert r.state.best_epoch == f1s.index(max(f1s)) + 1
    assert len(f1s) - r.state.best_epoch == p.patience


class _Killed(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_from_checkpoint_ends_like_an_uninterrupted_run(prepared, small_params, tmp_path, optimizer):
    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(
        update={
            "optimizer": optimizer,
            "bag": small_params.bag.model_copy(update={"dropout": 0.2}),
            "lr": 0.05 if optimizer == "adam" else 2.0,
            "schedule": "cosine",
            "warmup_steps": 3,
        }
    )
    full = fit(tr, va, cfg, p, CPU)

    def die_after_two(rec):
        if rec["epoch"] == 2:
            raise _Killed

    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Killed):
        fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp", on_epoch=die_after_two)
    # the on_epoch hook runs before the checkpoint of that epoch is written: epoch 1 is on disk
    seen = []
    resumed = fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp", on_epoch=seen.append)
    assert [h["epoch"] for h in seen] == list(range(1, p.epochs + 1))  # replayed + new epochs
    assert resumed.state.history == full.state.history
    for k in full.best_state:
        assert torch.equal(full.best_state[k], resumed.best_state[k]), k


def test_checkpoint_for_other_params_is_ignored(prepared, small_params, tmp_path):
    tr, va, cfg, _, _ = prepared
    ckpt = tmp_path / "ckpt"
    p = small_params.model_copy(update={"epochs": 2})
    fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="old")
    seen = []
    fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="new", on_epoch=seen.append)
    assert [h["epoch"] for h in seen] == [1, 2]  # trained from scratch, nothing replayed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_matches_cpu_quality(prepared, small_params):
    tr, va, cfg, _, _ = prepared
    cpu = fit(tr, va, cfg, small_params, CPU)
    gpu = fit(tr, va, cfg, small_params.model_copy(update={"device": "cuda"}), torch.device("cuda"))
    assert gpu.state.best_f1 >= cpu.state.best_f1 - 0.02


def test_an_empty_valid_split_is_a_clear_input_error(fixture_split, fixture_vocab, small_params):
    from textclf.errors import InputError

    train, valid, _ = fixture_split
    with pytest.raises(InputError, match="valid split is empty"):
        prepare(train, valid.iloc[:0], fixture_vocab, small_params)


def test_checkpoint_whose_tensors_and_state_disagree_is_not_resumed(prepared, small_params, tmp_path):
    """A kill between the two renames of a checkpoint save leaves epoch e+1's tensors beside
    epoch e's state: detected, and training starts over instead of mixing epochs."""
    import shutil

    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(update={"epochs": 3})
    a, b = tmp_path / "a", tmp_path / "b"

    class Stop(Exception):
        pass

    def stop_after(n):
        def hook(rec):
            if rec["epoch"] == n:
                raise Stop

        return hook

    with pytest.raises(Stop):
        fit(tr, va, cfg, p, CPU, checkpoint=a, fingerprint="fp", on_epoch=stop_after(2))  # epoch 1 saved
    with pytest.raises(Stop):
        fit(tr, va, cfg, p, CPU, checkpoint=b, fingerprint="fp", on_epoch=stop_after(3))  # epoch 2 saved
    shutil.copy(b / "state.safetensors", a / "state.safetensors")  # epoch-2 tensors, epoch-1 state
    seen = []
    fit(tr, va, cfg, p, CPU, checkpoint=a, fingerprint="fp", on_epoch=seen.append)
    assert [h["epoch"] for h in seen] == [1, 2, 3]  # trained from scratch: nothing replayed


def test_checkpoint_from_another_version_is_reported_and_training_starts_fresh(
    prepared, small_params, tmp_path, caplog
):
    """Same params and data (same fingerprint) but weights of another shape, as older code
    would have written: a warning, then a run from scratch that ends like an uninterrupted one."""
    import json
    import logging

    from safetensors.torch import load_file, save_file

    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(update={"epochs": 3})
    ckpt = tmp_path / "ckpt"

    class Stop(Exception):
        pass

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp", on_epoch=stop_after_two)
    tensors = load_file(str(ckpt / "state.safetensors"))
    tensors = {k: (v[:, :3].contiguous() if v.dim() == 2 else v) for k, v in tensors.items()}  # "old" shapes
    meta = json.loads((ckpt / "state.json").read_text())
    save_file(
        tensors,
        str(ckpt / "state.safetensors"),
        metadata={"tag": json.dumps({"epoch": meta["state"]["epoch"], "step": meta["state"]["step"]})},
    )
    seen = []
    with caplog.at_level(logging.WARNING, logger="textclf.train"):
        resumed = fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp", on_epoch=seen.append)
    assert "does not fit this model" in caplog.text
    assert [h["epoch"] for h in seen] == [1, 2, 3]
    fresh = fit(tr, va, cfg, p, CPU)
    for k, v in fresh.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_checkpoint_with_an_unreadable_state_is_reported_and_ignored(prepared, small_params, tmp_path, caplog):
    import logging

    tr, va, cfg, _, _ = prepared
    p = small_params.model_copy(update={"epochs": 2})
    ckpt = tmp_path / "ckpt"
    fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp")
    (ckpt / "state.json").write_text('{"fingerprint": "fp", "state": {"epoch": 1, "unknown_field": 3}}')
    seen = []
    with caplog.at_level(logging.WARNING, logger="textclf.train"):
        fit(tr, va, cfg, p, CPU, checkpoint=ckpt, fingerprint="fp", on_epoch=seen.append)
    assert "another version of textclf" in caplog.text
    assert [h["epoch"] for h in seen] == [1, 2]
