"""Small corpora and temp repos for tests (imported by conftest and by tests directly)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from textclf.paths import PROJECT_FILES, copy_project  # noqa: F401 (tests import PROJECT_FILES from here)

ROOT = Path(__file__).resolve().parents[1]

POS_ZH = ["很好", "喜欢", "满意", "推荐", "不错", "漂亮", "舒服", "快"]
NEG_ZH = ["很差", "失望", "难用", "退货", "糟糕", "太慢", "破", "脏"]
POS_EN = ["great", "excellent", "love", "perfect", "happy", "recommend"]
NEG_EN = ["terrible", "awful", "broken", "refund", "hate", "disappointing"]
NEUTRAL_ZH = ["房间", "酒店", "手机", "书", "价格", "服务", "屏幕", "电池", "早餐", "快递"]
NEUTRAL_EN = ["the", "room", "phone", "book", "price", "service", "screen", "battery"]


def project_params() -> dict:
    """The project's params.yaml as a dict, its file paths made absolute (for a stage run in a
    temp folder that holds no copy of them)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    p["clean"]["stopwords_file"] = str(ROOT / p["clean"]["stopwords_file"])
    return p


def make_docs(n: int = 600, seed: int = 0) -> list[tuple[str, str]]:
    """(label, text) pairs: learnable from sentiment words, mixed Chinese/English, some noise."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        zh = rng.random() < 0.7
        lex = (POS_ZH if label == "pos" else NEG_ZH) if zh else (POS_EN if label == "pos" else NEG_EN)
        neutral = NEUTRAL_ZH if zh else NEUTRAL_EN
        words = [rng.choice(neutral) for _ in range(rng.randint(2, 6))] + [
            rng.choice(lex) for _ in range(rng.randint(1, 3))
        ]
        rng.shuffle(words)
        sep = "" if zh else " "
        text = sep.join(words) + rng.choice(["", "!", "。", "！", f" #{i}"])
        docs.append((label, text))
    return docs


def write_text_dir(root: Path, docs: list[tuple[str, str]]) -> Path:
    """`<root>/<label>.txt`, one document per line (the original article's layout)."""
    root.mkdir(parents=True, exist_ok=True)
    by_label: dict[str, list[str]] = {}
    for label, text in docs:
        by_label.setdefault(label, []).append(text)
    for label, texts in by_label.items():
        (root / f"{label}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return root


def env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first (python, dvc), quiet DVC."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e.setdefault("GIT_AUTHOR_NAME", "textclf-tests")
    e.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
    e.setdefault("GIT_COMMITTER_NAME", "textclf-tests")
    e.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_repo(
    dest: Path,
    docs: list[tuple[str, str]] | None = None,
    params: dict | None = None,
    git: bool = True,
) -> Path:
    """A copy of the project in `dest`: git + DVC initialised, a fixture corpus in data/raw,
    params.yaml pointing at it (plus `params` overrides, section by section)."""
    copy_project(ROOT, dest)
    write_text_dir(dest / "data" / "raw", docs if docs is not None else make_docs())
    p = yaml.safe_load((dest / "params.yaml").read_text(encoding="utf-8"))
    p["ingest"]["source"] = "data/raw"
    # test time: autotune as configured, but 4 trials (a test that is about the search sets its own)
    p["train"]["autotune"]["trials"] = 4
    for section, values in (params or {}).items():
        p.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True, sort_keys=False), encoding="utf-8")
    if git:
        run(["git", "init", "-q", "-b", "main"], dest)
        run(["dvc", "init", "-q"], dest)
        # the project's DVC settings (analytics off, the offline `dvc plots show` template)
        shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
        shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots")
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "fixture repo"], dest)
    return dest


def contract_failure(main, root: Path, stage: str) -> dict:
    """Run a stage's `main()` that must fail its output contract: it exits 4, and this returns
    the validation report it wrote (reports/validation/<stage>.json)."""
    import pytest

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 4  # textclf.errors.CONTRACT
    return json.loads((root / "reports" / "validation" / f"{stage}.json").read_text(encoding="utf-8"))


def make_tiny_encoder(folder: Path, texts: list[str], seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random BERT (transformers' BertModel, `save_pretrained` as safetensors) with a WordPiece
    tokenizer.json over the words of `texts`, laid out as a sentence-transformers folder (mean
    pooling, normalised): what `train.encoder.path` names, small enough for a unit test."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    # the words as the tokenizer itself splits them (CJK characters one by one)
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(
        json.dumps(
            [{"type": "sentence_transformers.models.Pooling"}, {"type": "sentence_transformers.models.Normalize"}]
        )
    )
    (folder / "LICENSE").write_text("test fixture: random weights, no licence needed\n")
    return folder


SAMPLE = ROOT / "data" / "sample" / "reviews-zh"
ENGLISH = (
    "the hotel room was clean and the staff were friendly but breakfast was cold and the wifi kept dropping "
    "we would stay again for the location although parking cost far too much and the lift was slow"
).split()


def sample_docs(n_per_label: int = 700) -> list[tuple[str, str]]:
    """(label, text) pairs from the committed sample corpus (real Chinese reviews)."""
    docs = []
    for label in ("pos", "neg"):
        lines = [t for t in (SAMPLE / f"{label}.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
        docs += [(label, t) for t in lines[:n_per_label]]
    return docs


def english(n: int, seed: int = 0) -> list[str]:
    """English hotel-review word salad: text unlike the Chinese sample (drift)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(ENGLISH, size=int(rng.integers(12, 30)))) for _ in range(n)]


def wait_while_running(proc: subprocess.Popen, ready, what: str, timeout_s: float = 300, poll_s: float = 0.01) -> None:
    """Poll `ready()` until it holds while `proc` still runs (then the caller kills it mid-work);
    fails when `proc` ended first. A file read half-written (OSError, ValueError) is "not yet"."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ready():
                break
        except (OSError, ValueError):
            pass
        time.sleep(poll_s)
    assert proc.poll() is None, f"{what} finished before it could be killed"
