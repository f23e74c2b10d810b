"""`train.device` (auto | cpu | cuda | cuda:N | mps) and mixed precision: bf16 where the GPU has
it, else fp16 with a GradScaler. Device-agnostic on CPU; the CUDA paths run in `gpu` tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from textclf.errors import ParamsError
from textclf.model import build_model
from textclf.params import TrainParams, parse_section
from textclf.training.loop import amp_dtype, fit, grad_scaler, resolve_device, train_step

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(name):
    assert parse_section("train", {"device": name}).device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CUDA", "cuda:0,1", "tpu"])
def test_device_names_refused_naming_the_key(name):
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.device: .*pattern"):
        parse_section("train", {"device": name})


def test_cuda_index_checked_against_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) are visible \(CUDA_VISIBLE_DEVICES='4,5'\)"):
        resolve_device("cuda:2")


def test_missing_devices_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_device("auto") == CPU
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"train.device={name} but no CUDA device is available"):
            resolve_device(name)
    with pytest.raises(ValueError, match="no usable MPS"):
        resolve_device("mps")


def test_amp_dtype_follows_the_hardware(monkeypatch):
    cuda = torch.device("cuda", 0)
    assert amp_dtype(CPU, True) is None and amp_dtype(torch.device("mps"), True) is None
    assert amp_dtype(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cuda, True) == torch.bfloat16 and grad_scaler(torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cuda, True) == torch.float16
    assert grad_scaler(None) is None


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_a_scaled_step_is_the_plain_step(prepared, clip):
    """The loss-scaler path (fp16) unscales before clipping: the same update as without it."""
    tr, _, cfg, _, _ = prepared
    idx = torch.arange(min(64, tr.n))
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    plain, scaled = build_model(cfg), build_model(cfg)
    scaled.load_state_dict(plain.state_dict())
    opt_a = torch.optim.AdamW(plain.parameters(), lr=0.01)
    opt_b = torch.optim.AdamW(scaled.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for _ in range(3):
        torch.manual_seed(1)
        la = train_step(plain, opt_a, idx, tr, loss_fn, clip, None)
        torch.manual_seed(1)
        lb = train_step(scaled, opt_b, idx, tr, loss_fn, clip, None, scaler=scaler)
        assert float(la) == pytest.approx(float(lb), rel=1e-6)
    for a, b in zip(plain.parameters(), scaled.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert scaler.get_scale() == 2.0**10  # no overflow, no skipped step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_index_and_both_precisions_train(prepared, small_params, monkeypatch, bf16):
    """cuda:0 by name; bf16 autocast, and fp16 + GradScaler as on GPUs without bf16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    tr, va, cfg, _, _ = prepared
    device = resolve_device("cuda:0")
    assert amp_dtype(device, True) == (torch.bfloat16 if bf16 else torch.float16)
    cpu = fit(tr, va, cfg, small_params, CPU)
    gpu = fit(tr, va, cfg, small_params.model_copy(update={"device": "cuda:0", "amp": True}), device)
    assert gpu.state.best_f1 >= cpu.state.best_f1 - 0.03


def test_train_params_default_device_is_auto():
    assert TrainParams().device == "auto"
