"""Text functions shared by ingest, clean and prediction: decode, normalise, clean, tokenise, hash.

Every function here takes one *batch* (an Arrow array of strings) and returns a batch, so the same
code runs on a whole table, chunk by chunk over Parquet row groups, or per partition. The work is
done by Arrow compute kernels (RE2 regexes, Unicode normalisation, list kernels), not Python loops
over rows. Prediction calls `clean_batch` with the settings recorded in the model bundle, so a
served model sees exactly the tokens it was trained on.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.params import CleanParams

MARKER = "<停止词>"  # lines starting with it in the article's text files are not documents
URL_TOKEN, EMAIL_TOKEN = "<url>", "<email>"
# Private-use characters stand in for the placeholders while punctuation is stripped (they are
# neither punctuation, symbol nor digit), and become the real placeholder tokens at the end.
_URL_MARK, _EMAIL_MARK = "\ue000", "\ue001"

_SCRIPT_STYLE = r"(?is)<script\b[^>]*>.*?</script\s*>|<style\b[^>]*>.*?</style\s*>"
_COMMENT = r"(?s)<!--.*?-->"
_TAG = r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
_URL = r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"']+"
_EMAIL = r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"
_PUNCT = r"[\p{P}\p{S}]"
_DIGITS = r"\p{N}"
_CJK = r"([\p{Han}\p{Hiragana}\p{Katakana}])"

# scikit-learn's English list, minus negations: "not good" must not become "good".
_KEEP_EN = frozenset({"no", "not", "nor", "never", "none", "nothing", "cannot", "nobody", "neither"})


# ---------------------------------------------------------------------------------------------
# decoding (per file or per line: bytes in, text or a quarantine reason out)

def looks_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB: a binary file, not text in any encoding we accept."""
    return b"\x00" in data[:8192]


def decode(data: bytes, encoding: str = "auto") -> str | None:
    """Decode bytes: UTF-8 (BOM or not), then GB18030 for legacy Chinese files; None if neither.

    With a declared encoding only that encoding is tried.
    """
    if encoding != "auto":
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            return None
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return None


# ---------------------------------------------------------------------------------------------
# normalisation (ingest and predict): the text whose hash is the doc_id

def normalize(texts: pa.Array | Iterable[str]) -> pa.Array:
    """NFKC, BOMs and control characters removed, whitespace runs collapsed, ends stripped."""
    arr = _as_string_array(texts)
    arr = pc.utf8_normalize(arr, form="NFKC")
    arr = pc.replace_substring_regex(arr, pattern=r"[\x{feff}\x{200b}\x{00ad}]", replacement="")
    arr = pc.replace_substring_regex(arr, pattern=r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", replacement=" ")
    arr = pc.replace_substring_regex(arr, pattern=r"\s+", replacement=" ")
    return pc.utf8_trim_whitespace(arr)


# ---------------------------------------------------------------------------------------------
# cleaning and tokenisation (clean stage and predict)

def strip_html(arr: pa.Array) -> pa.Array:
    arr = pc.replace_substring_regex(arr, pattern=_SCRIPT_STYLE, replacement=" ")
    arr = pc.replace_substring_regex(arr, pattern=_COMMENT, replacement=" ")
    arr = pc.replace_substring_regex(arr, pattern=_TAG, replacement=" ")
    # Entities: only rows that contain '&' go through html.unescape (numeric entities need it).
    has_amp = pc.fill_null(pc.match_substring(arr, "&"), False)
    if pc.any(has_amp).as_py():
        idx = np.flatnonzero(has_amp.to_numpy(zero_copy_only=False))
        fixed = [html.unescape(s) if s is not None else None for s in arr.take(pa.array(idx)).to_pylist()]
        values = arr.to_pylist() if len(idx) * 4 > len(arr) else None
        if values is not None:
            for i, s in zip(idx, fixed, strict=True):
                values[i] = s
            arr = pa.array(values, type=pa.string())
        else:
            arr = pc.replace_with_mask(arr, has_amp, pa.array(fixed, type=pa.string()))
    return arr


def tokenize(arr: pa.Array, tokenizer: str) -> pa.ListArray:
    if tokenizer == "jieba":
        return _jieba_tokenize(arr)
    if tokenizer == "char":
        arr = pc.replace_substring_regex(arr, pattern=r"(\S)", replacement=r"\1 ")
    elif tokenizer == "auto":
        # CJK characters become single tokens; everything else stays whitespace-delimited words,
        # per document and within mixed documents.
        arr = pc.replace_substring_regex(arr, pattern=_CJK, replacement=r" \1 ")
    return pc.utf8_split_whitespace(arr)


def _jieba_tokenize(arr: pa.Array) -> pa.ListArray:
    try:
        import jieba
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("clean.tokenizer=jieba needs the jieba package: pip install 'textclf[jieba]'") from err
    jieba.setLogLevel(60)
    out = [[t for t in jieba.lcut(s) if t.strip()] if s is not None else None for s in arr.to_pylist()]
    return pa.array(out, type=pa.list_(pa.string()))


def _rebuild(lists: pa.ListArray, values: pa.Array, keep: pa.Array | None = None) -> pa.ListArray:
    """A list array with the same rows as `lists`, new flat `values`, optionally filtered."""
    n = len(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    if keep is not None:
        mask = keep.to_numpy(zero_copy_only=False)
        parents = parents[mask]
        values = values.filter(keep)
    counts = np.bincount(parents, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


@lru_cache(maxsize=8)
def _builtin_stopwords(names: tuple[str, ...]) -> frozenset[str]:
    words: set[str] = set()
    if "en" in names:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words |= set(ENGLISH_STOP_WORDS) - _KEEP_EN
    if "zh" in names:
        text = resources.files("stages").joinpath("resources/stopwords_zh.txt").read_text(encoding="utf-8")
        words |= {w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#")}
    return frozenset(words)


def load_stopwords(params: CleanParams, extra: Iterable[str] | None = None) -> frozenset[str]:
    """Built-in lists named in clean.stopwords, plus clean.stopwords_file (one word per line)."""
    words = set(_builtin_stopwords(tuple(sorted(params.stopwords))))
    if params.stopwords_file:
        path = Path(params.stopwords_file)
        if not path.exists():
            raise FileNotFoundError(f"clean.stopwords_file: {path} not found")
        words |= {w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()}
    if extra:
        words |= set(extra)
    return frozenset(words)


def clean_batch(texts: pa.Array | Iterable[str], params: CleanParams,
                stopwords: frozenset[str] | None = None) -> pa.ListArray:
    """Normalised texts → token lists (Arrow list<string>), following the clean.* settings."""
    arr = _as_string_array(texts)
    if params.html:
        arr = strip_html(arr)
    if params.urls:
        arr = pc.replace_substring_regex(arr, pattern=_URL, replacement=f" {_URL_MARK} ")
        arr = pc.replace_substring_regex(arr, pattern=_EMAIL, replacement=f" {_EMAIL_MARK} ")
    if params.lowercase:
        arr = pc.utf8_lower(arr)
    if params.punctuation:
        arr = pc.replace_substring_regex(arr, pattern=_PUNCT, replacement=" ")
    if params.digits:
        arr = pc.replace_substring_regex(arr, pattern=_DIGITS, replacement=" ")
    tokens = tokenize(arr, params.tokenizer)
    values = pc.list_flatten(tokens)
    if params.urls:
        values = pc.replace_substring(values, _URL_MARK, URL_TOKEN)
        values = pc.replace_substring(values, _EMAIL_MARK, EMAIL_TOKEN)
    stop = load_stopwords(params) if stopwords is None else stopwords
    # Splitting leaves empty strings where whitespace runs were: drop them with the stopwords.
    keep = pc.greater(pc.utf8_length(values), 0)
    if stop:
        keep = pc.and_(keep, pc.invert(pc.is_in(values, value_set=pa.array(sorted(stop), type=pa.string()))))
    return _rebuild(tokens, values, keep)


# ---------------------------------------------------------------------------------------------
# hashing: stable 64-bit ids as 16 hex characters

_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)
DOC_HASH_KEY = "textclf-doc-id-1"  # 16 bytes; changing it changes every doc_id


def hash64(texts: pa.Array | Iterable[str], key: str = DOC_HASH_KEY) -> np.ndarray:
    """SipHash-2-4 (pandas' vectorised implementation) of each string, as uint64."""
    arr = _as_string_array(texts)
    return pd.util.hash_array(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object),
                              hash_key=key, categorize=False)


def to_hex(h: np.ndarray) -> np.ndarray:
    """uint64 → 16-character lowercase hex strings, vectorised."""
    b = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
    return _HEX[b].reshape(-1, 16).copy().view("S16").ravel().astype(str)


def seed_key(seed: int) -> str:
    """A 16-byte SipHash key derived from an integer seed."""
    return f"textclf{seed % 10**9:09d}"


def join_tokens(tokens: pa.ListArray, sep: str = " ") -> pa.Array:
    return pc.binary_join(tokens, sep)


def _as_string_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        return texts if texts.type == pa.string() else texts.cast(pa.string())
    if isinstance(texts, pd.Series):
        return pa.array(texts.astype(object).where(texts.notna(), None), type=pa.string())
    return pa.array(list(texts), type=pa.string())
