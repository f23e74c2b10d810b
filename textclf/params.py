"""Typed params.yaml sections: one frozen model per stage, one loader.

Every stage reads its section through `load_params("<stage>")`. Unknown keys and wrong types are
rejected with a message naming the key (``params.yaml: train.lr: ...``), so a typo never silently
falls back to a default. Nothing else in the project reads params.yaml by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from textclf.errors import ParamsError
from textclf.families import FAMILIES

Family = Literal[FAMILIES]  # type: ignore[valid-type]  # the registry's names (textclf.families)

PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    # strict: "0.1" is not a float and 1.0 is not an int; extra: unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IngestParams(_Section):
    source: str = "data/sample/reviews-zh"
    format: Literal["auto", "text_dir", "fasttext", "csv", "tsv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    encoding: str = "auto"
    max_chars: int = Field(default=20_000, gt=0)
    chunk_rows: int = Field(default=0, ge=0)  # 0 = the whole table at once; N = N rows per batch
    engine: Literal["local", "dask"] = "local"  # dask: per-batch steps run on a dask.distributed cluster


class CleanParams(_Section):
    html: bool = True
    urls: bool = True
    lowercase: bool = True
    punctuation: bool = True
    digits: bool = True
    tokenizer: Literal["auto", "word", "char", "jieba"] = "auto"
    stopwords: tuple[Literal["en", "zh"], ...] = ("en", "zh")
    stopwords_file: str | None = None
    chunk_rows: int = Field(default=0, ge=0)  # 0 = the whole table at once; N = N rows per batch
    engine: Literal["local", "dask"] = "local"  # dask: per-batch steps run on a dask.distributed cluster

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data):
        # YAML gives lists; a frozen model wants tuples (hashable, comparable).
        if isinstance(data, dict) and isinstance(data.get("stopwords"), list):
            data = {**data, "stopwords": tuple(data["stopwords"])}
        return data


class SplitParams(_Section):
    seed: int = 42
    train: float = Field(default=0.8, gt=0, lt=1)
    valid: float = Field(default=0.1, ge=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)
    chunk_rows: int = Field(default=0, ge=0)  # 0 = the whole table at once; N = N rows per batch
    engine: Literal["local", "dask"] = "local"  # dask: per-batch steps run on a dask.distributed cluster

    @model_validator(mode="after")
    def _ratios_sum_to_one(self):
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.train + split.valid + split.test must be 1.0, got {total:g}")
        return self


class VocabParams(_Section):
    min_freq: int = Field(default=3, ge=1)
    max_size: int = Field(default=200_000, ge=1)
    ngrams: Literal[1, 2] = 2
    chunk_rows: int = Field(default=0, ge=0)  # 0 = the whole table at once; N = N rows per batch
    engine: Literal["local", "dask"] = "local"  # dask: per-batch steps run on a dask.distributed cluster


class DistributedParams(_Section):
    nproc: int = Field(default=1, ge=1)  # processes per node (torchrun --nproc-per-node)
    nnodes: int = Field(default=1, ge=1)  # torchrun --nnodes
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (multi-node); None = localhost
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: NCCL on CUDA, gloo on CPU


# Each family's section (train.<family>.*) is here, not in its module (textclf.families.<family>):
# params load without torch, and the family modules import torch.


class LinearParams(_Section):
    """The `linear` family: TF-IDF logistic regression + an NB-scaled head (textclf.families.linear)."""

    # inverse L2 strength: mean loss + ||W||^2 / (2 C n), scikit-learn's multinomial objective (with two
    # classes, a softmax over two rows pays half the penalty: scikit-learn's binary C = 2 C)
    C: float = Field(default=8.0, gt=0)
    nb_mix: float = Field(default=0.5, ge=0, le=1)  # weight of the NB head's probabilities; 0 = plain LR
    nb_alpha: float = Field(default=1.0, gt=0)  # smoothing of the naive-Bayes ratios
    sublinear_tf: bool = True  # 1 + log(tf) instead of tf
    max_iter: int = Field(default=300, gt=0)  # L-BFGS iterations per head


class BagParams(_Section):
    """The `bag` family (textclf.families.bag): a fastText-style mean of embeddings; trained by the
    epoch loop (train.optimizer, lr, batch_size, epochs, ...)."""

    embed_dim: int = Field(default=32, gt=0)
    hidden_dim: int = Field(default=0, ge=0)  # 0 = a linear head on the pooled embedding
    dropout: float = Field(default=0.9, ge=0, lt=1)
    weighting: Literal["none", "idf"] = "none"  # plain or IDF-weighted mean of embeddings


class CNNParams(_Section):
    """The `cnn` family (textclf.families.cnn): TextCNN; trained by the epoch loop."""

    embed_dim: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.9, ge=0, lt=1)
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = Field(default=100, gt=0)
    max_len: int = Field(default=400, gt=0)  # tokens kept per document

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data):
        if isinstance(data, dict) and isinstance(data.get("kernel_sizes"), list):
            data = {**data, "kernel_sizes": tuple(data["kernel_sizes"])}
        return data


class EncoderParams(_Section):
    """The `encoder` family (textclf.families.encoder): a pretrained encoder from a local folder."""

    # a local Hugging Face model folder (config.json, model.safetensors, tokenizer.json): a DVC
    # dependency of train. Nothing is ever downloaded; the default names a placeholder folder.
    path: str = "models/pretrained/none"
    mode: Literal["auto", "frozen", "finetune"] = "auto"  # auto: finetune on CUDA, frozen on CPU
    max_len: int = Field(default=128, ge=8, le=512)  # tokens per document (the encoder's own tokens)
    batch_tokens: int = Field(default=16384, ge=256)  # embedding / fine-tuning batches: padded tokens per batch
    # frozen: the pooled embedding joins the TF-IDF vector in the linear family's LR head (train.linear.*),
    # scaled by this (both vectors have unit length); 0 = TF-IDF only
    feature_scale: float = Field(default=0.5, ge=0)
    # finetune: AdamW, warm-up then linear decay, layer-wise lr decay, early stopping on valid macro-F1
    lr: float = Field(default=5e-5, gt=0)
    layer_decay: float = Field(default=0.9, gt=0, le=1)  # lr x this per layer below the top
    weight_decay: float = Field(default=0.01, ge=0)
    warmup: float = Field(default=0.1, ge=0, lt=1)  # share of the steps
    epochs: int = Field(default=4, gt=0)
    grad_accum: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)  # on the pooled embedding, before the head


class AutotuneParams(_Section):
    """Optuna search of the train params on the valid split (the test split is never read)."""

    budget_s: float = Field(default=300.0, ge=0)  # wall-clock ceiling of the search; 0 = autotune off
    trials: int = Field(default=12, ge=1)  # trials (the first one is the params as written)
    seed: int = 0
    families: tuple[Family, ...] = ("linear", "bag")
    pruner: Literal["median", "halving", "none"] = "median"  # on per-epoch valid macro-F1

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, data):
        if isinstance(data, dict) and isinstance(data.get("families"), list):
            data = {**data, "families": tuple(data["families"])}
        return data


class TrainParams(_Section):
    model: Family = "linear"
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")  # cuda:N: the N-th visible GPU
    # portable: the same bundle on any x86-64 machine (textclf.kernels); native: every core, widest kernels
    cpu_kernels: Literal["portable", "native"] = "portable"
    seed: int = 0
    # the encoding (linear, bag, encoder; cnn reads unigrams only)
    bigrams: Literal["none", "vocab", "hashed"] = "vocab"
    hash_buckets: int = Field(default=100_000, gt=0)
    # the epoch loop (bag, cnn)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(default=0.005, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.2, ge=0)
    schedule: Literal["none", "cosine", "linear"] = "none"
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float = Field(default=0.0, ge=0)  # 0 = off
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    class_weight: Literal["none", "balanced"] = "none"
    batch_size: int = Field(default=128, gt=0)
    epochs: int = Field(default=12, gt=0)
    patience: int = Field(default=3, ge=1)
    amp: bool = True  # CUDA: bf16 autocast where supported, else fp16 + GradScaler; ignored on CPU and MPS
    # the families' own settings
    linear: LinearParams = LinearParams()
    bag: BagParams = BagParams()
    cnn: CNNParams = CNNParams()
    encoder: EncoderParams = EncoderParams()
    autotune: AutotuneParams = AutotuneParams()
    distributed: DistributedParams = DistributedParams()

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        # a params.yaml from before the families had sections: say where each key went
        if isinstance(data, dict):
            moved = [f"train.{k} is now {' / '.join(f'train.{f}.{k}' for f in MOVED[k])}" for k in data if k in MOVED]
            if moved:
                raise ValueError("; ".join(moved))
        return data


# train keys that moved into a family's section (issue 23: one module per family)
MOVED: dict[str, tuple[str, ...]] = {
    "embed_dim": ("bag", "cnn"),
    "hidden_dim": ("bag",),
    "dropout": ("bag", "cnn"),
    "weighting": ("bag",),
    "kernel_sizes": ("cnn",),
    "num_filters": ("cnn",),
    "max_len": ("cnn",),
}


class BaselineParams(_Section):
    C: float = Field(default=8.0, gt=0)  # LR on the model's tokens
    raw_C: float = Field(default=4.0, gt=0)  # LR on the raw text (scikit-learn's analyzers)
    max_features: int = Field(default=500_000, gt=0)
    max_iter: int = Field(default=1000, gt=0)


class LabelsParams(_Section):
    """The suspect-labels stage: out-of-fold TF-IDF + LR probabilities, ranked by cleanlab."""

    folds: int = Field(default=5, ge=2)  # cross-validation folds, assigned by duplicate group
    C: float = Field(default=1.0, gt=0)  # the LR's inverse regularisation
    max_features: int = Field(default=200_000, gt=0)  # TF-IDF 1-2-grams over the cleaned tokens
    seed: int = Field(default=0, ge=0)  # fold assignment
    top: int = Field(default=20, ge=0)  # suspects shown in the flow's artifact and the stage's log


class EvaluateParams(_Section):
    calibration_bins: int = Field(default=10, gt=1)
    bootstrap: int = Field(default=1000, ge=0)  # paired bootstrap replicates of model - baseline; 0 = off
    seed: int = Field(default=0, ge=0)


class DriftParams(_Section):
    """The new-data flow's drift gate (textclf.drift): thresholds of its four checks."""

    max_oov_increase: float = Field(default=0.2, ge=0, le=1)  # over the test split's OOV rate
    label_shift: float = Field(default=0.25, ge=0, le=1)  # largest change of one label's share
    confidence_ks: float = Field(default=0.3, ge=0, le=1)  # KS statistic, top-class probability
    length_ks: float = Field(default=0.3, ge=0, le=1)  # KS statistic, tokens per document
    alpha: float = Field(default=0.001, gt=0, lt=1)  # significance of the distribution checks
    min_docs: int = Field(default=30, ge=1)  # fewer documents: the OOV check only


SECTIONS: dict[str, type[_Section]] = {
    "ingest": IngestParams,
    "clean": CleanParams,
    "split": SplitParams,
    "vocab": VocabParams,
    "train": TrainParams,
    "baseline": BaselineParams,
    "labels": LabelsParams,
    "evaluate": EvaluateParams,
    "drift": DriftParams,
}


def _format_error(section: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join([section, *(str(p) for p in e["loc"])]) if e["loc"] else section
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            owner: type[BaseModel] = SECTIONS[section]
            for part in e["loc"][:-1]:  # nested sections (train.distributed.*)
                field = owner.model_fields.get(str(part))
                if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                    owner = field.annotation
            allowed = ", ".join(sorted(owner.model_fields))
            msg = f"unknown key (allowed: {allowed})"
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"params.yaml: {key}: {msg}")
    return "\n".join(lines)


def parse_section(section: str, values: dict | None):
    """Turn one raw params section (a dict) into its frozen typed object."""
    if section not in SECTIONS:
        raise ParamsError(f"params.yaml: unknown section {section!r} (known: {', '.join(SECTIONS)})")
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: {section}: expected a mapping, got {type(values).__name__}")
    try:
        return SECTIONS[section].model_validate(values)
    except ValidationError as err:
        raise ParamsError(_format_error(section, err)) from None


def read_params_file(path: Path | str = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section(s) {unknown} (known: {', '.join(SECTIONS)})")
    return data


def load_params(section: str, path: Path | str = PARAMS_FILE):
    """Load and validate one section of params.yaml."""
    return parse_section(section, read_params_file(path).get(section))
