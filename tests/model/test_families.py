"""The family registry: one module per family, every family answering the same interface, the
params sections per family, and no family name tested outside its module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from textclf.errors import ParamsError
from textclf.families import FAMILIES
from textclf.families.base import EpochFamily, ModelFamily
from textclf.families.registry import family
from textclf.model import build_model, forward_batch
from textclf.params import TrainParams, parse_section

ROOT = Path(__file__).resolve().parents[2]


def test_every_name_is_a_module_with_its_family_object():
    for name in FAMILIES:
        fam = family(name)
        assert isinstance(fam, ModelFamily) and fam.name == name
        assert fam.layout in ("bag", "padded")
        assert (ROOT / f"textclf/families/{name}.py").is_file()
    assert isinstance(family("bag"), EpochFamily) and isinstance(family("cnn"), EpochFamily)
    with pytest.raises(ValueError, match="known: linear, bag, cnn, encoder"):
        family("svm")


def test_train_model_takes_its_values_from_the_registry():
    for name in FAMILIES:
        assert TrainParams(model=name).model == name
    with pytest.raises(ParamsError, match="train.model"):
        parse_section("train", {"model": "svm"})


@pytest.mark.parametrize("name", ["linear", "bag", "cnn"])
def test_each_family_builds_from_its_own_section(name):
    p = TrainParams.model_validate({"model": name, "bag": {"embed_dim": 8}, "cnn": {"embed_dim": 12, "max_len": 50}})
    cfg = family(name).model_config(p, 30, 3)
    assert cfg.type == name and cfg.num_embeddings == 30 and cfg.num_classes == 3
    if name == "bag":
        assert cfg.embed_dim == 8
    if name == "cnn":
        assert (cfg.embed_dim, cfg.max_len) == (12, 50)
    model = build_model(cfg).eval()
    ids = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.int64)
    logits = forward_batch(model, ids, torch.tensor([0, 3, 6]), torch.tensor([0, 1]))
    assert logits.shape == (2, 3)


def test_a_key_that_moved_into_a_family_section_says_where_it_went():
    with pytest.raises(ParamsError, match=r"train.dropout is now train.bag.dropout / train.cnn.dropout"):
        parse_section("train", {"dropout": 0.5})
    with pytest.raises(ParamsError, match=r"train.max_len is now train.cnn.max_len"):
        parse_section("train", {"max_len": 100})
    assert parse_section("train", {"bag": {"dropout": 0.5}}).bag.dropout == 0.5


def test_no_code_outside_a_family_module_tests_a_family_name():
    """Model, training, autotune, export and the runner ask the registry instead (the point of
    one module per family): no `cfg.type == "cnn"`, `p.model in ("bag", ...)` or isinstance of a
    family's module elsewhere in the library."""
    pattern = re.compile(
        r"""(type|model)\s*(==|!=|in)\s*\(?["'](linear|bag|cnn|encoder)["']|isinstance\([^)]*(BagModel|CNNModel|LinearModel)"""
    )
    offenders = []
    for path in sorted((ROOT / "textclf").rglob("*.py")):
        if path.parent.name == "families":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert offenders == []
