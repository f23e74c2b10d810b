"""Text functions shared by ingest, clean and prediction: decode, normalise, clean, tokenise, hash.

Every function here takes one *batch* (an Arrow array of strings) and returns a batch, so the same
code runs on a whole table, chunk by chunk over Parquet row groups, or per partition. The work is
done by Arrow compute kernels (RE2 regexes, Unicode normalisation, list kernels), not Python loops
over rows. Prediction calls `clean_batch` with the settings recorded in the model bundle, so a
served model sees exactly the tokens it was trained on.
"""

from __future__ import annotations

import codecs
import html
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textclf.parallel import map_slices
from textclf.params import CleanParams

MARKER = "<停止词>"  # lines starting with it in the article's text files are not documents
URL_TOKEN, EMAIL_TOKEN = "<url>", "<email>"
# Private-use characters stand in for the placeholders while punctuation is stripped (they are
# neither punctuation, symbol nor digit), and become the real placeholder tokens at the end.
_URL_MARK, _EMAIL_MARK = "\ue000", "\ue001"

_SCRIPT_STYLE = r"(?is)<script\b[^>]*>.*?</script\s*>|<style\b[^>]*>.*?</style\s*>"
_COMMENT = r"(?s)<!--.*?-->"
_TAG = r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
# A URL runs until whitespace, a quote or bracket, or a non-ASCII character: Chinese text often
# follows a link without a space ("见http://x.cn/a很好"), and that text is not part of the link.
# Only the scheme is case-insensitive: under (?i) the class would also exclude "s" and "k" (they
# case-fold to U+017F and U+212A, which are in the excluded non-ASCII range).
_URL = r"\b(?i:https?://|ftp://|www\.)[^\s<>\"'\x{80}-\x{10ffff}]+"
_EMAIL = r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"
_PUNCT = r"[\p{P}\p{S}]"
_DIGITS = r"\p{N}"
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"

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
    return map_slices(_normalize, _as_string_array(texts))


# any character one of the three rewrites below touches (one check, then only if a row has one)
_NEEDS_REWRITE = r"[\x{feff}\x{200b}\x{00ad}\x00-\x08\x0b\x0c\x0e-\x1f\x7f\t\n\f\r]|\s\s"


def _normalize(arr: pa.Array) -> pa.Array:
    arr = pc.utf8_normalize(arr, form="NFKC")
    if not pc.match_substring_regex(arr, _NEEDS_REWRITE).true_count:
        return pc.utf8_trim_whitespace(arr)
    arr, _ = _sub_where(arr, r"[\x{feff}\x{200b}\x{00ad}]", r"[\x{feff}\x{200b}\x{00ad}]", "")
    arr, _ = _sub_where(arr, r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", " ")
    # only rows with a whitespace run or a non-space whitespace character need rewriting
    arr, _ = _sub_where(arr, r"\s\s|[\t\n\f\r]", r"\s+", " ")
    return pc.utf8_trim_whitespace(arr)


# ---------------------------------------------------------------------------------------------
# cleaning and tokenisation (clean stage and predict)


def strip_html(arr: pa.Array) -> pa.Array:
    """Remove tags, comments and <script>/<style> elements with their content; unescape entities."""
    arr = _as_string_array(arr)
    # every pattern needs a '<': only the rows with one are rewritten, all three steps at once
    lt = pc.match_substring(arr, "<")
    if lt.true_count:
        lt = pc.fill_null(lt, False)
        some = arr.filter(lt)
        for pattern in (_SCRIPT_STYLE, _COMMENT, _TAG):
            some = pc.replace_substring_regex(some, pattern=pattern, replacement=" ")
        arr = pc.replace_with_mask(arr, lt, some)
    # Entities: only rows that contain '&' go through html.unescape (numeric entities need it).
    has_amp = pc.match_substring(arr, "&")
    if has_amp.true_count:
        has_amp = pc.fill_null(has_amp, False)
        fixed = [html.unescape(s) if s is not None else None for s in arr.filter(has_amp).to_pylist()]
        arr = pc.replace_with_mask(arr, has_amp, pa.array(fixed, type=pa.string()))
    return arr


def _sub_where(arr: pa.Array, hint: str, pattern: str, replacement: str) -> tuple[pa.Array, np.ndarray | None]:
    """`replace_substring_regex`, run only on the rows that match the cheap regex `hint` (most
    rows have no tag, URL or e-mail, and a literal search is much faster than the full pattern).
    Also returns which rows matched the hint (None: none did)."""
    mask = pc.match_substring_regex(arr, hint)
    if not mask.true_count:  # a null row never counts
        return arr, None
    if mask.null_count:
        mask = pc.fill_null(mask, False)
    fixed = pc.replace_substring_regex(arr.filter(mask), pattern=pattern, replacement=replacement)
    return pc.replace_with_mask(arr, mask, fixed), mask.to_numpy(zero_copy_only=False)


def tokenize(arr: pa.Array, tokenizer: str, punctuation: bool = False, digits: bool = False) -> pa.ListArray:
    """Texts → token lists. `word`: whitespace-delimited words; `char`: every non-space character;
    `auto`: CJK characters one token each, other text words (within mixed documents too);
    `jieba`: jieba's word segmentation. With `punctuation` / `digits`, those characters
    (`\\p{P}\\p{S}` / `\\p{N}`) separate tokens and are dropped; kept punctuation is split off
    the words around it, a run of it one token ("great!!!" → "great", "!!!"), because runs such
    as "!!!", "?!" and ":)" carry sentiment. A null text has no tokens.
    The URL / e-mail placeholder characters `clean_batch` puts in become `<url>` / `<email>`."""
    arr = _as_string_array(arr)
    if tokenizer == "jieba":
        if punctuation:
            arr = pc.replace_substring_regex(arr, pattern=_PUNCT, replacement=" ")
        if digits:
            arr = pc.replace_substring_regex(arr, pattern=_DIGITS, replacement=" ")
        return _jieba_tokenize(arr)
    if tokenizer not in ("word", "char", "auto"):
        raise ValueError(f"unknown tokenizer {tokenizer!r} (auto, word, char, jieba)")
    drop = _SPACE | (_PUNCT_CLS if punctuation else 0) | (_DIGIT_CLS if digits else 0)
    arr = pc.fill_null(arr, "")
    # Work in slices of about _CHUNK_BYTES of text: bounded temporary memory on any corpus size.
    offsets = _offsets(arr)
    bounds = [0]
    while bounds[-1] < len(arr):
        start = bounds[-1]
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_BYTES, side="right")) - 1
        bounds.append(min(len(arr), max(stop, start + 1)))
    parts = [
        _tokenize_codepoints(arr.slice(a, b - a), tokenizer, drop) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    if not parts:
        return pa.array([], type=pa.list_(pa.string()))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


# Character classes for the tokenizer, as bit flags per code point. They are computed once with
# the same RE2 classes the regex steps use (\p{P}\p{S}, \p{N}, \p{Han}...) and Arrow's notion of
# whitespace, so the table is the definition, not an approximation of it.
_SPACE, _PUNCT_CLS, _DIGIT_CLS, _CJK_CLS = 1, 2, 4, 8
_CHUNK_BYTES = 16 << 20


def _classify(codepoints: np.ndarray) -> np.ndarray:
    chars = pa.array(
        list(codepoints.astype("<u4").tobytes().decode("utf-32-le", errors="replace")),
        type=pa.string(),
    )
    flags = np.zeros(len(chars), dtype=np.uint8)
    for flag, pattern in ((_PUNCT_CLS, _PUNCT), (_DIGIT_CLS, _DIGITS), (_CJK_CLS, _CJK)):
        flags |= flag * pc.match_substring_regex(chars, pattern).to_numpy(zero_copy_only=False).astype(np.uint8)
    flags |= _SPACE * pc.utf8_is_space(chars).to_numpy(zero_copy_only=False).astype(np.uint8)
    return flags


@lru_cache(maxsize=1)
def _bmp_classes() -> np.ndarray:
    cps = np.arange(0x10000, dtype=np.uint32)
    cps[0xD800:0xE000] = 0x20  # surrogates never occur in decoded text
    return _classify(cps)


def _char_classes(cp: np.ndarray) -> np.ndarray:
    flags = _bmp_classes()[cp & 0xFFFF]
    astral = cp > 0xFFFF
    if astral.any():  # rare (emoji, CJK extension B+): classify just the distinct ones
        uniq, inv = np.unique(cp[astral], return_inverse=True)
        flags[astral] = _classify(uniq)[inv]
    return flags


def _offsets(arr: pa.Array) -> np.ndarray:
    """Value offsets of a string or list array (respecting slicing), as int64."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def _tokenize_codepoints(arr: pa.StringArray, tokenizer: str, drop: int) -> pa.ListArray:
    """One batch, no nulls. Decode to code points once, find token starts with array logic, and
    build the Arrow list<string> straight from buffers: no Python objects per row or token."""
    n = len(arr)
    off = _offsets(arr)
    raw = memoryview(arr.buffers()[2])[off[0] : off[-1]] if n else b""
    cp = np.frombuffer(codecs.decode(raw, "utf-8").encode("utf-32-le"), dtype=np.uint32)
    doc_off = np.zeros(n + 1, dtype=np.int64)  # documents' boundaries in code points
    np.cumsum(pc.utf8_length(arr).to_numpy(zero_copy_only=False), out=doc_off[1:])
    flags = _char_classes(cp)
    member = (flags & drop) == 0  # a character that ends up inside some token
    if tokenizer == "char":
        start = member
    else:  # a token starts at a member after a non-member, a document start, or a CJK character
        boundary = np.empty(len(cp), dtype=bool)
        boundary[:1] = True
        np.logical_not(member[:-1], out=boundary[1:])
        boundary[doc_off[:-1][doc_off[:-1] < doc_off[1:]]] = True
        if tokenizer == "auto":
            cjk = (flags & _CJK_CLS) != 0
            boundary |= cjk
            boundary[1:] |= cjk[:-1]
        if not drop & _PUNCT_CLS:  # kept punctuation: a run of it is a token ("!!!", "?!", ":)")
            punct = (flags & _PUNCT_CLS) != 0
            boundary[1:] |= punct[1:] != punct[:-1]
        start = member & boundary
    list_offsets = np.searchsorted(np.flatnonzero(start), doc_off).astype(np.int32)
    # A token's characters are contiguous, so the kept characters, in order, are exactly the
    # tokens' characters back to back: token k starts at the kept-index of its first character.
    kept = cp[member]
    tok_start = np.flatnonzero(start[member])
    kept, tok_start = _expand_placeholders(kept, tok_start)
    data = kept.tobytes().decode("utf-32-le").encode("utf-8")
    utf8 = np.frombuffer(data, dtype=np.uint8)
    lead = np.flatnonzero((utf8 & 0xC0) != 0x80)  # byte offset of each kept code point
    value_offsets = np.append(lead[tok_start], len(utf8)).astype(np.int32)
    values = pa.StringArray.from_buffers(len(tok_start), pa.py_buffer(value_offsets), pa.py_buffer(data))
    return pa.ListArray.from_arrays(pa.array(list_offsets, type=pa.int32()), values)


_PLACEHOLDERS = {ord(_URL_MARK): URL_TOKEN, ord(_EMAIL_MARK): EMAIL_TOKEN}


def _expand_placeholders(kept: np.ndarray, tok_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write each placeholder character (always a token of its own) out as its token name, in the
    code point stream, before the strings are built: no pass over all tokens afterwards."""
    found = np.flatnonzero((kept == ord(_URL_MARK)) | (kept == ord(_EMAIL_MARK)))
    if not len(found):
        return kept, tok_start
    width = np.ones(len(kept), dtype=np.int64)
    for cp, name in _PLACEHOLDERS.items():
        width[found[kept[found] == cp]] = len(name)
    pos = np.zeros(len(kept) + 1, dtype=np.int64)  # where each code point starts after expansion
    np.cumsum(width, out=pos[1:])
    out = np.repeat(kept, width)
    for cp, name in _PLACEHOLDERS.items():
        at = pos[found[kept[found] == cp]]
        out[at[:, None] + np.arange(len(name))] = np.frombuffer(name.encode("utf-32-le"), dtype=np.uint32)
    return out, pos[tok_start]


def _jieba_tokenize(arr: pa.Array) -> pa.ListArray:
    try:
        import jieba
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("clean.tokenizer=jieba needs the jieba package: pip install 'textclf[jieba]'") from err
    jieba.setLogLevel(60)
    name = {_URL_MARK: URL_TOKEN, _EMAIL_MARK: EMAIL_TOKEN}
    out = [[name.get(t, t) for t in jieba.lcut(s) if t.strip()] if s is not None else [] for s in arr.to_pylist()]
    return pa.array(out, type=pa.list_(pa.string()))


def _rebuild(lists: pa.ListArray, values: pa.Array, keep: np.ndarray) -> pa.ListArray:
    """`lists`' rows holding `values` (same length as the flattened lists) where `keep` is true."""
    offsets = _offsets(lists) - _offsets(lists)[0]
    # new offset = old offset - values dropped before it (few are dropped: no pass over all values)
    dropped = np.flatnonzero(~keep)
    new_offsets = offsets - np.searchsorted(dropped, offsets)
    return pa.ListArray.from_arrays(pa.array(new_offsets, type=pa.int32()), values.filter(pa.array(keep)))


@lru_cache(maxsize=8)
def _builtin_stopwords(names: tuple[str, ...]) -> frozenset[str]:
    words: set[str] = set()
    for name in names:  # textclf/resources/stopwords_<name>.txt; params allow only the shipped names
        text = resources.files("textclf").joinpath(f"resources/stopwords_{name}.txt").read_text(encoding="utf-8")
        listed = {w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#")}
        words |= listed - _KEEP_EN if name == "en" else listed
    return frozenset(words)


def load_stopwords(params: CleanParams, extra: Iterable[str] | None = None) -> frozenset[str]:
    """Built-in lists named in clean.stopwords, plus clean.stopwords_file (one word per line)."""
    words = set(_builtin_stopwords(tuple(sorted(params.stopwords))))
    if params.stopwords_file:
        path = Path(params.stopwords_file)
        if not path.exists():
            raise FileNotFoundError(f"clean.stopwords_file: {path} not found")
        # Compared with cleaned tokens, so normalised the same way: NFKC, lowercased if tokens are.
        lines = path.read_text(encoding="utf-8").splitlines()
        # `#` starts a comment line (the file says so): never a stopword, nor in a bundle's list
        user = {unicodedata.normalize("NFKC", w.strip()) for w in lines if not w.lstrip().startswith("#")}
        words |= {w.lower() if params.lowercase else w for w in user if w}
    if extra:
        words |= set(extra)
    return frozenset(words)


def clean_batch(
    texts: pa.Array | Iterable[str], params: CleanParams, stopwords: frozenset[str] | None = None
) -> pa.ListArray:
    """Normalised texts → token lists (Arrow list<string>), following the clean.* settings."""
    stop = load_stopwords(params) if stopwords is None else stopwords
    return map_slices(lambda arr: _clean_slice(arr, params, stop), _as_string_array(texts))


def _clean_slice(arr: pa.Array, params: CleanParams, stop: frozenset[str]) -> pa.ListArray:
    if params.html:
        arr = strip_html(arr)
    if params.urls:  # placeholder characters now, token names when the tokens are built
        arr, _ = _sub_where(arr, r"(?i)://|www\.", _URL, f" {_URL_MARK} ")
        arr, _ = _sub_where(arr, "@", _EMAIL, f" {_EMAIL_MARK} ")
    if params.lowercase:
        arr = pc.utf8_lower(arr)
    tokens = tokenize(arr, params.tokenizer, punctuation=params.punctuation, digits=params.digits)
    values = pc.list_flatten(tokens)
    keep = np.ones(len(values), dtype=bool)
    if params.tokenizer == "jieba":  # jieba can return tokens that are only spaces
        keep &= pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0).to_numpy(zero_copy_only=False)
    if stop:
        keep &= ~pc.is_in(values, value_set=_stopword_array(stop)).to_numpy(zero_copy_only=False)
    return tokens if keep.all() else _rebuild(tokens, values, keep)


@lru_cache(maxsize=8)
def _stopword_array(stop: frozenset[str]) -> pa.Array:
    # the placeholder tokens are never stopwords: a link is a signal whatever the word list says
    return pa.array(sorted(stop - {URL_TOKEN, EMAIL_TOKEN}), type=pa.string())


# ---------------------------------------------------------------------------------------------
# hashing: stable 64-bit ids as 16 hex characters

_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)
DOC_HASH_KEY = "textclf-doc-id-1"  # 16 bytes; changing it changes every doc_id


def hash64(texts: pa.Array | Iterable[str], key: str = DOC_HASH_KEY) -> np.ndarray:
    """SipHash-2-4 (pandas' vectorised implementation) of each string, as uint64."""
    arr = _as_string_array(texts)
    return pd.util.hash_array(
        np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object), hash_key=key, categorize=False
    )


def to_hex(h: np.ndarray) -> np.ndarray:
    """uint64 → 16-character lowercase hex strings, vectorised."""
    b = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
    return _HEX[b].reshape(-1, 16).copy().view("S16").ravel().astype(str)


def hex_array(h: np.ndarray) -> pa.StringArray:
    """uint64 → 16-character lowercase hex strings as an Arrow array, built from one buffer."""
    b = np.ascontiguousarray(h.astype(">u8")).view(np.uint8).reshape(-1, 8)
    data = np.ascontiguousarray(_HEX[b].reshape(-1))
    offsets = np.arange(0, 16 * (len(h) + 1), 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(h), pa.py_buffer(offsets), pa.py_buffer(data))


def seed_key(seed: int) -> str:
    """A 16-byte SipHash key derived from an integer seed."""
    return f"textclf{seed % 10**9:09d}"


def bigrams(tokens: pa.ListArray) -> pa.ListArray:
    """Adjacent token pairs per document, joined by a space (tokens never contain spaces)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    n = len(tokens)
    values = pc.list_flatten(tokens)  # respects slicing; a null list contributes nothing
    lengths = pc.fill_null(pc.list_value_length(tokens), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)  # into `values`, not into the (maybe sliced) buffers
    np.cumsum(lengths, out=offsets[1:])
    new_offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.maximum(lengths - 1, 0), out=new_offsets[1:])
    if len(values) < 2:
        return pa.ListArray.from_arrays(pa.array(new_offsets), pa.array([], pa.string()))
    pairs = pc.binary_join_element_wise(values[:-1], values[1:], " ")
    # a pair is valid when both tokens belong to the same document: drop the pairs that start
    # at a document's last token
    last = offsets[1:][lengths > 0] - 1
    keep = np.ones(len(values) - 1, dtype=bool)
    keep[last[last < len(values) - 1]] = False
    return pa.ListArray.from_arrays(pa.array(new_offsets), pairs.filter(pa.array(keep)))


def token_tfidf(max_features: int):
    """scikit-learn's TF-IDF of 1–2-grams over space-joined cleaned tokens, as the baseline and
    the labels stage's out-of-fold model use it (imported here, not at module load)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        tokenizer=str.split,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        sublinear_tf=True,
        max_features=max_features,
        dtype=np.float32,
    )


def join_tokens(tokens: pa.ListArray, sep: str = " ") -> pa.Array:
    return pc.binary_join(tokens, sep)


def _as_string_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        return texts if texts.type == pa.string() else texts.cast(pa.string())
    if isinstance(texts, pd.Series):
        arr = pa.array(texts, from_pandas=True)  # zero-copy for Arrow-backed columns
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        return arr if arr.type == pa.string() else arr.cast(pa.string())
    return pa.array(list(texts), type=pa.string())
