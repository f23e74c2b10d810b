"""textclf.text: decoding, normalisation, cleaning, tokenisation, hashing.

The vectorised tokenizer is checked against a plain-Python reference on generated text, so the
fast path can never drift from the definition.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textclf import text
from textclf.params import CleanParams
from textclf.text import (
    EMAIL_TOKEN,
    URL_TOKEN,
    clean_batch,
    decode,
    hash64,
    hex_array,
    load_stopwords,
    looks_binary,
    normalize,
    strip_html,
    to_hex,
    tokenize,
)

NO_STOP: frozenset[str] = frozenset()


def toks(texts, stopwords=NO_STOP, **kw):
    return clean_batch(texts, CleanParams(**kw), stopwords).to_pylist()


# ---------------------------------------------------------------------------------------------
# decoding


def test_decode_utf8_with_and_without_bom():
    assert decode("好的 ok".encode()) == "好的 ok"
    assert decode(b"\xef\xbb\xbf" + "好的".encode()) == "好的"  # the BOM is not text


def test_decode_falls_back_to_gb18030_for_legacy_chinese():
    data = "这本书很好看，推荐！".encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert decode(data) == "这本书很好看，推荐！"


def test_decode_undecodable_and_declared_encoding():
    assert decode(b"\xff\xfe\xff") is None  # valid in neither UTF-8 nor GB18030
    assert decode("café".encode("latin-1"), "latin-1") == "café"
    assert decode("好".encode(), "ascii") is None  # a declared encoding is the only one tried
    assert decode(b"abc", "no-such-codec") is None


def test_looks_binary():
    assert looks_binary(b"PK\x03\x04\x00\x00")
    assert not looks_binary("文本".encode())
    assert not looks_binary(b"")


# ---------------------------------------------------------------------------------------------
# normalisation


def test_normalize_nfkc_whitespace_invisible_and_control_characters():
    out = normalize(
        [
            "  ＡＢＣ１２３！\u3000全角  ",
            "a\u200bb\ufeffc\xadd",
            "x\x00y\x07z",
            "tab\tand\r\nnewline",
            "",
            None,
        ]
    ).to_pylist()
    assert out == ["ABC123! 全角", "abcd", "x y z", "tab and newline", "", None]


# characters whose classification is the same in every Unicode version in use
ALPHABET = (
    list("abcXYZ éüß")
    + list("0123")
    + list("٣１")
    + list(",.!?;:'\"-_()<>@#%&*/")
    + list("，。！？、；：（）【】《》“”…～￥")
    + list("好的很书价格手机不错")
    + list("ひらがなカタカナ")
    + list(" \t\n\r\u3000\xa0\x0b\x00\x1f\x7f\u200b\ufeff\xad")
    + ["😀", "𠀀", "ﬁ", "①"]
    + [text._URL_MARK, text._EMAIL_MARK]
)  # what clean_batch puts in for links and e-mails
texts = st.lists(st.text(alphabet=st.sampled_from(ALPHABET), max_size=25), min_size=0, max_size=12)


def ref_normalize(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    s = re.sub("[\ufeff\u200b\xad]", "", s)
    s = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", s)
    return re.sub("[\t\n\f\r ]+", " ", s).strip()


@settings(max_examples=50, deadline=None)
@given(texts)
def test_normalize_matches_reference_and_is_idempotent(batch):
    out = normalize(batch).to_pylist()
    assert out == [ref_normalize(s) for s in batch]
    assert normalize(out).to_pylist() == out


# ---------------------------------------------------------------------------------------------
# tokenisation: the vectorised tokenizer against a plain-Python definition


def is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK UNIFIED IDEOGRAPH", "HIRAGANA LETTER", "KATAKANA LETTER"))


def ref_tokenize(s: str, mode: str, punctuation: bool, digits: bool) -> list[str]:
    def sep(ch):
        cat = unicodedata.category(ch)
        return ch.isspace() or (punctuation and cat[0] in "PS") or (digits and cat[0] == "N")

    def punct(ch):
        return unicodedata.category(ch)[0] in "PS"

    out: list[str] = []
    word = ""
    for ch in s:
        if sep(ch) or mode == "char" or (mode == "auto" and is_cjk(ch)):
            if word:
                out.append(word)
            word = ""
            if not sep(ch):
                out.append(ch)
        else:
            # kept punctuation: a run of it is a token of its own
            if word and not punctuation and punct(ch) != punct(word[-1]):
                out.append(word)
                word = ""
            word += ch
    out += [word] if word else []
    return [t.replace(text._URL_MARK, URL_TOKEN).replace(text._EMAIL_MARK, EMAIL_TOKEN) for t in out]


@settings(max_examples=50, deadline=None)
@given(
    batch=texts,
    mode=st.sampled_from(["auto", "word", "char"]),
    punctuation=st.booleans(),
    digits=st.booleans(),
    chunk=st.sampled_from([8, 64, 1 << 20]),
)
def test_tokenize_matches_reference(batch, mode, punctuation, digits, chunk):
    batch = [s.replace("\x00", "") for s in batch]
    old = text._CHUNK_BYTES
    text._CHUNK_BYTES = chunk  # small chunks: documents spread over many batches
    try:
        out = tokenize(pa.array(batch, type=pa.string()), mode, punctuation=punctuation, digits=digits)
    finally:
        text._CHUNK_BYTES = old
    assert out.type == pa.list_(pa.string())
    assert out.to_pylist() == [ref_tokenize(s, mode, punctuation, digits) for s in batch]


def test_tokenize_sliced_input_nulls_and_empty_batch():
    arr = pa.array(["skip me", "a b", None, "好 c"])
    assert tokenize(arr.slice(1), "auto").to_pylist() == [["a", "b"], [], ["好", "c"]]
    assert tokenize(pa.array([], type=pa.string()), "word").to_pylist() == []
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenize(arr, "bpe")


# ---------------------------------------------------------------------------------------------
# cleaning


def test_full_width_chinese_punctuation_is_removed():
    raw = "这本书，很好看。真的！【推荐】《书名》“引号”、顿号；冒号：问号？……～"
    for t in (raw, normalize([raw])[0].as_py()):  # before and after NFKC
        tokens = toks([t])[0]
        assert tokens and all(unicodedata.category(c)[0] not in "PS" for tok in tokens for c in tok)
        assert "".join(tokens) == "这本书很好看真的推荐书名引号顿号冒号问号"


def test_urls_and_emails_become_placeholder_tokens():
    out = toks(
        [
            "see https://example.com/a?b=1 or www.Example.org now",
            "mail Foo.Bar+x@mail.example.co.uk ok",
            "见http://x.cn/a很好",
            "no links here",
        ]
    )
    assert out[0] == ["see", URL_TOKEN, "or", URL_TOKEN, "now"]
    assert out[1] == ["mail", EMAIL_TOKEN, "ok"]
    assert out[2] == ["见", URL_TOKEN, "很", "好"]  # the link ends where the Chinese text starts
    assert out[3] == ["no", "links", "here"]
    # the scheme is case-insensitive, the rest of the link may hold any ASCII letter (s and k too)
    assert toks(["HTTPS://Shop.SK/kiss?s=k 好", "Www.Kiosk.sk"]) == [[URL_TOKEN, "好"], [URL_TOKEN]]
    assert toks(["see https://example.com"], urls=False)[0] == ["see", "https", "example", "com"]


def test_placeholders_survive_char_tokenizer_and_stopwords():
    out = toks(["好http://x.com"], tokenizer="char", stopwords=frozenset({"<url>", "好"}))
    assert out == [[URL_TOKEN]]  # a stopword list cannot remove the placeholder


def test_html_script_and_style_content_removed_entities_unescaped():
    doc = (
        "<html><head><style>body {color: red}</style><script type='text/javascript'>var evil = 1;"
        "</script></head><body><p>Great&nbsp;book &amp; fast <b>delivery</b></p><!-- hidden comment -->"
        "<SCRIPT>alert('x')</SCRIPT>好评</body></html>"
    )
    assert strip_html(pa.array([doc])).to_pylist()[0].split() == [
        "Great",
        "book",
        "&",
        "fast",
        "delivery",
        "好评",
    ]
    tokens = toks([doc])[0]
    assert tokens == ["great", "book", "fast", "delivery", "好", "评"]
    assert not {"var", "evil", "alert", "color", "red", "hidden"} & set(tokens)
    assert "script" in toks([doc], html=False)[0]  # the step is configurable


def test_lowercase_digits_and_punctuation_are_configurable():
    assert toks(["Model X2 costs 100元!"]) == [["model", "x", "costs", "元"]]
    assert toks(["Model X2 costs 100元!"], lowercase=False, digits=False, punctuation=False) == [
        ["Model", "X2", "costs", "100", "元", "!"]
    ]


def test_auto_tokenizer_on_mixed_chinese_english():
    assert toks(["iPhone手机很好用, battery great"]) == [["iphone", "手", "机", "很", "好", "用", "battery", "great"]]
    assert toks(["日本語のテキスト"]) == [["日", "本", "語", "の", "テ", "キ", "ス", "ト"]]
    assert toks(["good book"], tokenizer="char") == [["g", "o", "o", "d", "b", "o", "o", "k"]]
    assert toks(["手机 很好"], tokenizer="word") == [["手机", "很好"]]


def test_jieba_tokenizer_segments_words():
    out = toks(["我喜欢这本书，物流很快。"], tokenizer="jieba")[0]
    assert "喜欢" in out and "物流" in out
    assert all(t.strip() for t in out) and "，" not in out


def test_builtin_stopwords_keep_negations():
    words = load_stopwords(CleanParams())
    assert {"the", "and", "的", "了"} <= words
    assert not {"not", "no", "never", "不", "没", "很"} & words  # they carry sentiment
    assert toks(["The book is not good 的确不好"], stopwords=words) == [["book", "not", "good", "确", "不", "好"]]
    assert load_stopwords(CleanParams(stopwords=())) == frozenset()


def test_user_stopwords_file(tmp_path):
    path = tmp_path / "stop.txt"
    path.write_text("# a comment line\n书\nbook\n\n  感觉  \n  #another\nGreat\nＧＯＯＤ\n", encoding="utf-8")
    params = CleanParams(stopwords=("en",), stopwords_file=str(path))
    words = load_stopwords(params)
    assert {"书", "book", "感觉", "the"} <= words
    assert not any(w.startswith("#") for w in words)  # comments are not stopwords (issue 29)
    # user words are compared with cleaned tokens, so they are normalised the same way
    assert toks(["Great GOOD book, fine"], stopwords=words) == [["fine"]]
    assert {"Great", "GOOD"} <= load_stopwords(params.model_copy(update={"lowercase": False}))
    assert clean_batch(["the book 书 感觉 不错"], params, words).to_pylist() == [["感", "觉", "不", "错"]]
    assert clean_batch(["the book 书 感觉"], params.model_copy(update={"tokenizer": "word"}), words).to_pylist() == [[]]
    with pytest.raises(FileNotFoundError, match="stopwords_file"):
        load_stopwords(CleanParams(stopwords_file=str(tmp_path / "missing.txt")))


def test_clean_batch_returns_arrow_lists_and_keeps_rows():
    out = clean_batch(pa.array(["好", None, "", "。。。"]), CleanParams(), NO_STOP)
    assert isinstance(out, pa.ListArray) and out.type == pa.list_(pa.string())
    assert out.to_pylist() == [["好"], [], [], []]


# ---------------------------------------------------------------------------------------------
# hashing


def test_doc_hash_is_pinned():
    # doc_id is the interface between versions of the data: it must never change by accident
    assert list(to_hex(hash64(["好的", "hello"]))) == ["328cf978c19c13da", "be541a8a8efd365d"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=30))
def test_hex_array_matches_to_hex(batch):
    h = hash64(batch)
    assert h.dtype == np.uint64
    assert hex_array(h).to_pylist() == list(to_hex(h))
    assert all(re.fullmatch("[0-9a-f]{16}", x) for x in to_hex(h))


def test_hash_key_changes_hashes():
    a = hash64(["x", "y"])
    assert (a != hash64(["x", "y"], key=text.seed_key(1))).all()
    assert len(text.seed_key(-5)) == len(text.seed_key(10**12)) == 16
