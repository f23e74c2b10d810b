"""Prediction: raw texts → labels and probabilities, with the bundle's own text settings.

One code path with the pipeline: `normalize` (ingest's normalisation, the text whose hash is the
doc_id) → `clean_batch` with the clean settings recorded in the bundle (the clean stage's
function) → `encode` (train's encoding) → the model, in torch or in ONNX Runtime (the graph the
export stage wrote). A `Predictor` loads a bundle once and classifies batches; the CLI, the HTTP
server and the benchmark all use it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import torch
from pydantic import ValidationError

from textclf import paths
from textclf.bundle import Bundle, BundleError, load_bundle
from textclf.errors import InputError
from textclf.families import TEXT_FAMILIES
from textclf.model import EncodingConfig, VocabIndex, encode, predict_proba
from textclf.onnx_runtime import FP32, OnnxClassifier, bundle_digest
from textclf.params import CleanParams
from textclf.paths import ONNX_DIR
from textclf.text import clean_batch, load_stopwords, looks_binary, normalize

DEFAULT_BUNDLE = paths.BUNDLE
DEFAULT_ONNX = ONNX_DIR / FP32
RUNTIMES = ("torch", "onnx")
# the normalisation versions this code implements (recorded by train as config["text"]["normalize"])
NORMALIZATIONS = ("nfkc-v1",)


class Predictor:
    """A bundle loaded once, classifying batches of raw texts.

    `runtime="onnx"` runs the graph at `onnx_path` (default models/onnx/model.onnx; the int8
    graph is models/onnx/model.int8.onnx) in ONNX Runtime; the bundle still provides the text
    settings, the vocabulary and the labels, and the graph must have been exported from it.
    Safe to call from several threads at once (the server does).
    """

    def __init__(
        self,
        bundle: Bundle | Path | str = DEFAULT_BUNDLE,
        runtime: str = "torch",
        onnx_path: Path | str | None = None,
        batch_size: int = 4096,
        threads: int = 0,
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.runtime = runtime
        self.batch_size = batch_size
        self.labels = self.bundle.labels
        self.digest = bundle_digest(self.bundle)
        self.clean_params, self.stopwords = _text_settings(self.bundle)
        try:
            self.encoding = EncodingConfig(**self.bundle.config["encoding"])
        except TypeError as err:
            raise BundleError(
                f"{self.bundle.path}: config.json `encoding` is not one this textclf reads: {err}"
            ) from None
        self.vocab_tokens = VocabIndex(self.bundle.vocab["tokens"])
        # families that read the text as well (textclf.families.TEXT_FAMILIES): their tokenizer
        self.text_tokenizer = None
        if self.bundle.config["model"].get("type") in TEXT_FAMILIES:
            from textclf.families import encoder as fam

            self.text_tokenizer = fam.tokenizer_for(self.bundle)
            self._html = fam.bundle_html(self.bundle)
        self.onnx: OnnxClassifier | None = None
        self.model: torch.nn.Module | None = None
        if runtime == "onnx":
            self.onnx = OnnxClassifier(onnx_path or DEFAULT_ONNX, self.bundle, threads=threads)
        else:
            self.model = self.bundle.build_model("cpu")
        self._label_array = np.array(self.labels, dtype=object)

    # -- the shared path ----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str] | pa.Array) -> pa.ListArray:
        """Raw texts → tokens, exactly as ingest + clean turn a raw document into its tokens."""
        return self._tokens(normalize(_strings(texts)))

    def _tokens(self, normalized: pa.Array) -> pa.ListArray:
        return clean_batch(normalized, self.clean_params, self.stopwords)

    def encode(self, texts: Sequence[str] | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        return encode(self.tokenize(texts), self.vocab_tokens, self.encoding)

    def predict_proba(self, texts: Sequence[str] | pa.Array) -> np.ndarray:
        """Class probabilities [n, labels] (float32), in input order."""
        if self.text_tokenizer is not None:
            return self._encoder_proba(normalize(_strings(texts)))
        ids, offsets = self.encode(texts)
        if self.onnx is not None:
            return self.onnx.proba(ids, offsets, self.batch_size)
        return predict_proba(self.model, torch.from_numpy(ids), torch.from_numpy(offsets), self.batch_size).numpy()

    def _encoder_proba(self, normalized: pa.Array) -> np.ndarray:
        from textclf.families import encoder as fam

        ids, offsets = encode(self._tokens(normalized), self.vocab_tokens, self.encoding)
        etexts = fam.encoder_texts(normalized, self._html)
        if self.onnx is not None:
            return self.onnx.proba(ids, offsets, lists=self.text_tokenizer(etexts))
        return fam.predict_proba(self.model, self.text_tokenizer, ids, offsets, etexts)

    def predict(self, texts: Sequence[str] | pa.Array, digits: int = 6) -> list[dict]:
        """One `{"label", "probabilities": {label: p}}` per text, in input order (probabilities
        rounded to `digits`; the label is the argmax of the unrounded ones)."""
        proba = self.predict_proba(texts)
        best = self._label_array[proba.argmax(axis=1)] if len(proba) else []
        rounded = np.round(proba.astype(np.float64), digits).tolist()
        return [
            {"label": label, "probabilities": dict(zip(self.labels, row, strict=True))}
            for label, row in zip(best, rounded, strict=True)
        ]

    def metadata(self) -> dict:
        cfg = self.bundle.config
        training = cfg.get("training") or {}
        return {
            "labels": self.labels,
            "bundle": {
                "path": str(self.bundle.path),
                "sha256": self.digest,
                "format": cfg.get("format"),
                "vocab_hash": cfg.get("vocab_hash"),
                "created": cfg.get("created"),
            },
            "model": {
                "type": cfg["model"].get("type"),
                "runtime": self.runtime,
                "onnx": str(self.onnx.path) if self.onnx is not None else None,
                "onnx_variant": self.onnx.meta.get("textclf.variant") if self.onnx is not None else None,
            },
            "training": {
                "date": cfg.get("created"),
                "best_epoch": training.get("best_epoch"),
                "best_valid_macro_f1": training.get("best_valid_macro_f1"),
                "epochs_run": training.get("epochs_run"),
                "device": training.get("device"),
            },
            "text": cfg.get("text"),
        }


def _text_settings(bundle: Bundle) -> tuple[CleanParams, frozenset[str]]:
    text = bundle.config.get("text")
    if not isinstance(text, dict) or "clean" not in text:
        raise BundleError(
            f"{bundle.path}: config.json records no text settings (`text.clean`): "
            "retrain with this textclf (`dvc repro train`)"
        )
    if text.get("normalize") not in NORMALIZATIONS:
        raise BundleError(
            f"{bundle.path}: trained with text normalisation {text.get('normalize')!r}; "
            f"this textclf implements {', '.join(NORMALIZATIONS)}: retrain or use a matching textclf"
        )
    try:
        params = CleanParams.model_validate(text["clean"])
    except ValidationError as err:
        raise BundleError(f"{bundle.path}: config.json text.clean is not valid for this textclf: {err}") from None
    # The user's extra list is in the bundle by content: prediction never opens the path the
    # training run read (the file may have changed since, or a crafted config may name /dev/zero).
    extra = text.get("stopwords_extra")
    if params.stopwords_file and not isinstance(extra, list):
        raise BundleError(
            f"{bundle.path}: trained with clean.stopwords_file, but the bundle does not hold that "
            "stopword list (a bundle from an older textclf): retrain with `dvc repro train`"
        )
    if not all(isinstance(w, str) for w in extra or []):
        raise BundleError(f"{bundle.path}: config.json text.stopwords_extra must be a list of strings")
    stopwords = load_stopwords(params.model_copy(update={"stopwords_file": None}), extra=extra or [])
    return params, stopwords


def _strings(texts: Sequence[str] | pa.Array) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        arr = texts if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type) else None
    else:
        try:
            arr = pa.array(list(texts), type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = None
    if arr is None:
        raise ValueError("texts must be strings")
    if arr.null_count:
        raise ValueError(f"texts must be strings: {arr.null_count} null/None value(s)")
    return arr


# ---------------------------------------------------------------------------------------------
# batch input and output (the `textclf predict` command)

INPUT_FORMATS = ("auto", "text", "csv", "tsv", "jsonl")
OUTPUT_FORMATS = ("jsonl", "csv")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


SKIPPED_EMPTY = {"label": None, "probabilities": None, "skipped": "empty"}


class TextSource:
    """Texts from a file or stdin, streamed: one per line, or one per CSV/TSV row or JSONL object
    from `column`. A blank line or an empty value is yielded as "" — its row keeps its place in
    the output (`predict_rows`) — unless `skip_empty`, which drops and counts them. A file with NUL
    bytes is refused as binary (ingest's rule), whatever the encoding."""

    def __init__(
        self,
        path: str | Path | None,
        fmt: str = "auto",
        column: str = "text",
        encoding: str = "utf-8",
        stdin: TextIO | None = None,
        skip_empty: bool = False,
    ):
        self.skip_empty = skip_empty
        self.path = None if path in (None, "-") else Path(path)
        self.name = str(self.path) if self.path else "<stdin>"
        if fmt == "auto":
            fmt = _SUFFIX_FORMATS.get(self.path.suffix.lower(), "text") if self.path else "text"
        if fmt not in INPUT_FORMATS:
            raise InputError(f"unknown input format {fmt!r} ({', '.join(INPUT_FORMATS)})")
        self.fmt, self.column = fmt, column
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"unknown encoding {encoding!r}") from None
        # a UTF-8 BOM would otherwise end up in the first CSV header or text
        self.encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        self.stdin = stdin
        self.skipped_blank = 0

    def _open(self) -> TextIO:
        if self.path is None:
            stream = self.stdin if self.stdin is not None else sys.stdin
            buffer = getattr(stream, "buffer", None)  # decode stdin's bytes with --encoding
            return io.TextIOWrapper(buffer, encoding=self.encoding, newline="") if buffer is not None else stream
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, not a file")
        if not self.path.exists():
            raise InputError(f"{self.path}: not found")
        try:
            with open(self.path, "rb") as raw:
                head = raw.read(8192)
            if looks_binary(head):
                raise InputError(
                    f"{self.path}: a binary file (NUL bytes), not text in any encoding: nothing to classify"
                )
            return open(self.path, encoding=self.encoding, newline="")
        except OSError as err:
            raise InputError(f"{self.path}: cannot read: {err.strerror}") from None

    def __iter__(self) -> Iterator[str]:
        f = self._open()
        try:
            if self.fmt == "text":
                yield from self._lines(f)
            elif self.fmt == "jsonl":
                yield from self._jsonl(f)
            else:
                yield from self._delimited(f, "," if self.fmt == "csv" else "\t")
        except UnicodeDecodeError as err:
            raise InputError(
                f"{self.name}: not {self.encoding} text ({err.reason} at byte {err.start}); pass --encoding"
            ) from None
        finally:
            if self.path is not None:
                f.close()
            elif isinstance(f, io.TextIOWrapper) and f is not sys.stdin and f is not self.stdin:
                f.detach()  # leave stdin itself open

    def _lines(self, f: TextIO) -> Iterator[str]:
        for line in f:
            text = line.rstrip("\r\n")
            if "\x00" in text:
                raise InputError(f"{self.name}: a NUL byte in the input: binary data, not text")
            if not text.strip():
                self.skipped_blank += 1
                if self.skip_empty:
                    continue
                text = ""
            yield text

    def _jsonl(self, f: TextIO) -> Iterator[str]:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{self.name}:{lineno}: not valid JSON: {err.msg}") from None
            if not isinstance(obj, dict) or self.column not in obj:
                raise InputError(f"{self.name}:{lineno}: no {self.column!r} field (choose the field with --column)")
            value = self._check(obj[self.column], f"{self.name}:{lineno}")
            if value is not None:
                yield value

    def _delimited(self, f: TextIO, sep: str) -> Iterator[str]:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputError(f"{self.name}: not valid {self.fmt.upper()}: {err}") from None
        if self.column not in header:
            raise InputError(
                f"{self.name}: no column {self.column!r} (columns: {', '.join(header)}); choose one with --column"
            )
        col = header.index(self.column)
        try:
            for row in reader:
                if not row:
                    continue
                where = f"{self.name}:{reader.line_num}"
                if col >= len(row):
                    raise InputError(f"{where}: row has {len(row)} field(s), no {self.column!r} value")
                value = self._check(row[col], where)
                if value is not None:
                    yield value
        except csv.Error as err:
            raise InputError(f"{self.name}:{reader.line_num}: not valid {self.fmt.upper()}: {err}") from None

    def _check(self, value, where: str) -> str:
        if not isinstance(value, str):
            raise InputError(f"{where}: {self.column!r} is {type(value).__name__}, not text")
        if not value.strip():
            self.skipped_blank += 1
            return None if self.skip_empty else ""
        return value


def predict_rows(predictor: Predictor, texts: list[str]) -> list[dict]:
    """One record per text, in order; an empty text gets `SKIPPED_EMPTY` (nothing to classify)
    instead of being dropped, so output row N is input row N."""
    keep = [i for i, t in enumerate(texts) if t.strip()]
    got = iter(predictor.predict([texts[i] for i in keep])) if keep else iter(())
    kept = set(keep)
    return [next(got) if i in kept else dict(SKIPPED_EMPTY) for i in range(len(texts))]


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class RecordWriter:
    """Prediction records as JSONL (`{"label", "probabilities"}`) or CSV (label, prob_<label>...)."""

    def __init__(self, out: TextIO, fmt: str, labels: list[str]):
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"unknown output format {fmt!r} ({', '.join(OUTPUT_FORMATS)})")
        self.out, self.fmt, self.labels = out, fmt, labels
        self._csv = None

    def write(self, records: list[dict]) -> None:
        if self.fmt == "csv":
            if self._csv is None:  # the header with the first records: no input, no output
                self._csv = csv.writer(self.out, lineterminator="\n")
                self._csv.writerow(["label", *(f"prob_{c}" for c in self.labels)])
            # a skipped row: no label, no probabilities (its `skipped` reason is in the JSONL form)
            self._csv.writerows(
                [r["label"], *(r["probabilities"][c] for c in self.labels)]
                if r.get("probabilities") is not None
                else ["", *([""] * len(self.labels))]
                for r in records
            )
        else:
            self.out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
