"""textclf.params: typed sections, unknown keys and wrong types rejected with the key's name."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from tests.fixtures import ROOT
from textclf.errors import ParamsError
from textclf.params import (
    CleanParams,
    IngestParams,
    SplitParams,
    VocabParams,
    load_params,
    parse_section,
    read_params_file,
)


def write_params(path, data) -> str:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "section, cls",
    [
        ("ingest", IngestParams),
        ("clean", CleanParams),
        ("split", SplitParams),
        ("vocab", VocabParams),
    ],
)
def test_project_params_file_loads_every_data_section(section, cls):
    params = load_params(section, ROOT / "params.yaml")
    assert isinstance(params, cls)


def test_values_from_the_file_override_defaults_and_lists_become_tuples(tmp_path):
    path = write_params(
        tmp_path / "params.yaml",
        {
            "ingest": {"source": "data/raw", "max_chars": 50},
            "clean": {"stopwords": ["en"], "tokenizer": "char"},
        },
    )
    ingest = load_params("ingest", path)
    assert (ingest.source, ingest.max_chars, ingest.format) == ("data/raw", 50, "auto")
    clean = load_params("clean", path)
    assert clean.stopwords == ("en",) and clean.tokenizer == "char"
    assert load_params("vocab", path) == VocabParams()  # a missing section means all defaults


def test_sections_are_frozen():
    params = parse_section("vocab", {"min_freq": 2})
    with pytest.raises(pydantic.ValidationError):
        params.min_freq = 3


def test_unknown_key_names_section_and_key_and_lists_allowed_keys(tmp_path):
    path = write_params(tmp_path / "params.yaml", {"ingest": {"sourse": "data/raw"}})
    with pytest.raises(ParamsError) as err:
        load_params("ingest", path)
    msg = str(err.value)
    assert "ingest.sourse" in msg and "unknown key" in msg
    assert "source" in msg and "max_chars" in msg  # the allowed keys


@pytest.mark.parametrize(
    "section, values, key",
    [
        ("vocab", {"min_freq": "3"}, "vocab.min_freq"),  # strict: a string is not an int
        ("clean", {"lowercase": "yes"}, "clean.lowercase"),
        ("ingest", {"max_chars": 1.5}, "ingest.max_chars"),
        ("ingest", {"format": "xlsx"}, "ingest.format"),
        ("clean", {"stopwords": ["en", "fr"]}, "clean.stopwords"),
        ("vocab", {"ngrams": 3}, "vocab.ngrams"),
        ("vocab", {"max_size": 0}, "vocab.max_size"),
        ("split", {"train": "0.8"}, "split.train"),
    ],
)
def test_wrong_type_or_value_names_the_key(section, values, key):
    with pytest.raises(ParamsError) as err:
        parse_section(section, values)
    assert key in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


def test_split_ratios_must_sum_to_one():
    with pytest.raises(ParamsError, match="must be 1.0"):
        parse_section("split", {"train": 0.8, "valid": 0.1, "test": 0.2})
    assert parse_section("split", {"train": 0.7, "valid": 0.0, "test": 0.3}).valid == 0.0


def test_unknown_section_and_non_mapping_section(tmp_path):
    with pytest.raises(ParamsError, match="unknown section"):
        parse_section("ingestt", {})
    path = write_params(tmp_path / "params.yaml", {"ingest": {}, "typo_section": {}})
    with pytest.raises(ParamsError, match="typo_section"):
        read_params_file(path)
    with pytest.raises(ParamsError, match="expected a mapping"):
        parse_section("clean", ["html"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params("ingest", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params("ingest", bad)
