"""Plain-text raw sources: the text_dir layouts and fastText's `__label__` lines.

Each reader is `(path, ReadOptions) -> Iterator[record frame]`: `read_text_dir` takes the
corpus folder (its layout is the format), `read_fasttext` one file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from textclf.errors import InputError
from textclf.sources.records import (
    ReadOptions,
    is_binary,
    read_bytes,
    read_line_file,
    record_frame,
    whole_file_record,
)
from textclf.text import decode

log = logging.getLogger("textclf.sources")

SPLIT_DIRS = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
}
FASTTEXT_EXT = (".txt", ".ft", ".fasttext")


def hidden(path: Path, root: Path) -> bool:
    """A dot-prefixed part anywhere below `root` (pos/.git/config, not only .notes): skipped."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_text_dir(root: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    """`<root>/[train|valid|test/]<label>.txt` (a document per line) and
    `<root>/[train|valid|test/]<label>/*.txt` (a document per file)."""
    if not root.is_dir():
        raise InputError(f"ingest.source: {root} is not a directory (ingest.format=text_dir)")
    encoding = opts.encoding
    children = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    split_dirs = [p for p in children if p.is_dir() and p.name.lower() in SPLIT_DIRS]
    if split_dirs:
        stray = [p.name for p in children if p not in split_dirs]
        if stray:
            raise InputError(
                f"{root}: has split folders ({', '.join(p.name for p in split_dirs)}) and "
                f"also {', '.join(stray)}; put every document under train/, valid/ or test/"
            )
        for d in split_dirs:
            yield from _read_label_layout(d, SPLIT_DIRS[d.name.lower()], encoding)
    else:
        yield from _read_label_layout(root, None, encoding)


def _read_label_layout(root: Path, split: str | None, encoding: str) -> Iterator[pd.DataFrame]:
    found = False
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() == ".txt":
            found = True
            yield read_line_file(p, p.stem, split, encoding)
        elif p.is_dir():
            found = True
            yield read_file_per_doc(p, p.name, split, encoding)
        else:  # not part of the layout: one quarantined record, so the file is accounted for
            log.warning("%s: not a <label>.txt file or <label>/ folder: quarantined as unsupported_file", p)
            yield whole_file_record(p, f"<file {p.name}, {p.stat().st_size} bytes>", "unsupported_file", None, split)
    if not found:
        raise InputError(f"{root}: no <label>.txt files or <label>/ folders found")


def read_file_per_doc(folder: Path, label: str, split: str | None, encoding: str) -> pd.DataFrame:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not hidden(p, folder))
    texts, reasons = [], []
    for p in files:
        data = read_bytes(p)
        if is_binary(data, encoding):
            texts.append(f"<binary file, {len(data)} bytes>")
            reasons.append("binary")
            continue
        s = decode(data, encoding)
        texts.append(s if s is not None else data.decode("utf-8", errors="backslashreplace"))
        reasons.append(None if s is not None else "undecodable")
    n = len(files)
    return record_frame(texts, [label] * n, [split] * n, [str(p) for p in files], [None] * n, reasons)


def read_fasttext(path: Path, opts: ReadOptions) -> Iterator[pd.DataFrame]:
    """`__label__pos some text` lines. A line without exactly one leading label is `malformed`."""
    lines = read_line_file(path, None, None, opts.encoding)
    ok = lines["reason"].isna().to_numpy()
    if not ok.any():
        yield lines
        return
    text = lines["text"].to_numpy(dtype=object, na_value=None).copy()
    arr = pa.array(text[ok], type=pa.string())
    m = pc.extract_regex(arr, pattern=r"^\s*(?P<labels>(?:__label__\S*\s*)*)(?P<rest>.*)$")
    labels = pc.utf8_trim_whitespace(pc.struct_field(m, "labels"))
    words = pc.utf8_split_whitespace(labels)  # "" splits into [""]: never an empty list
    nlab = np.where(
        pc.equal(labels, "").to_numpy(zero_copy_only=False),
        0,
        pc.list_value_length(words).to_numpy(zero_copy_only=False),
    )
    first = pc.replace_substring_regex(pc.list_element(words, 0), "^__label__", "")
    blank = pc.equal(pc.utf8_trim_whitespace(arr), "").to_numpy(zero_copy_only=False)
    bad = (nlab != 1) & ~blank  # blank lines are `empty`, decided by ingest
    rest = pc.struct_field(m, "rest").to_numpy(zero_copy_only=False)
    text[ok] = np.where(bad, text[ok], rest)  # a malformed line keeps its original record
    label = np.full(len(lines), None, dtype=object)
    label[ok] = np.where(nlab == 1, first.to_numpy(zero_copy_only=False), None)
    reason = lines["reason"].to_numpy(dtype=object, na_value=None).copy()
    reason[ok] = np.where(bad, "malformed", None)
    yield record_frame(text, label, lines["split"], lines["source"], lines["line"], reason)
