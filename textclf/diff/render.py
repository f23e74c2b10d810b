"""Rendering a data diff: one list of blocks, drawn as a terminal table (`render_text`) or as
Markdown (`render_markdown`: PR comments, Prefect artifacts); or JSON (`render_json`)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from textclf.diff.core import jsonable
from textclf.diff.read import diff_revisions


def markdown_diff(root: Path | str = ".", base_rev: str = "HEAD", level: int = 3) -> str:
    """The workspace's data changes against `base_rev` as Markdown (for the pipeline flow's
    artifact, nested under its own heading). Raises DiffError like `diff_revisions`."""
    return render_markdown(diff_revisions(root, base_rev, None), level=level)


# =============================================================================================
# rendering: one list of blocks, drawn as a terminal table or as Markdown; or JSON


def render_json(diff: dict) -> str:
    return json.dumps(jsonable(diff), indent=2, ensure_ascii=False) + "\n"


def render_text(diff: dict) -> str:
    out: list[str] = []
    for block in _blocks(diff):
        kind = block[0]
        if kind == "title":
            out += [block[1], "=" * _width(_plain(block[1]))]
        elif kind == "warning":
            out += ["", f"WARNING: {block[1]}"]
        elif kind == "heading":
            out += ["", block[1], "-" * _width(block[1])]
        elif kind == "table":
            out += _text_table(block[1], block[2])
        elif kind == "para":
            out.append(f"  {block[1]}")
        elif kind == "list":
            out += [f"    - {item}" for item in block[1]]
    return "\n".join(_plain(line) for line in out) + "\n"


def render_markdown(diff: dict, level: int = 2) -> str:
    """Markdown with the title at heading `level` and sections one level below."""
    out: list[str] = []
    for block in _blocks(diff):
        kind = block[0]
        if kind == "title":
            out += [f"{'#' * level} {block[1]}", ""]
        elif kind == "warning":
            out += [f"> **WARNING:** {block[1]}", ""]
        elif kind == "heading":
            out += [""] * (out[-1] != "") + [f"{'#' * (level + 1)} {block[1]}", ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            align = ["---"] + ["--:" if _numeric_col(rows, i) else "---" for i in range(1, len(headers))]
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join(align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "para":
            out += [block[1], ""]
        elif kind == "list":
            out += [f"- {item}" for item in block[1]] + [""]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _blocks(d: dict) -> list[tuple]:
    """The report as blocks: ("title"|"warning"|"heading"|"para", text), ("list", items),
    ("table", headers, rows). Anything that comes from the data sits in a `code` span (`_code`):
    literal in Markdown, its backticks dropped in the terminal. One function per section."""
    A, B = d["a"]["rev"], d["b"]["rev"]
    blocks: list[tuple] = [("title", f"Data diff: {_rev_name(d['a'])} → {_rev_name(d['b'])}")]
    blocks += [("warning", w) for w in d.get("warnings", [])]
    blocks += _document_blocks(d["documents"], A, B)
    blocks += _label_blocks(d["labels"], A, B)
    blocks += _split_blocks(d["splits"], A, B)
    blocks += _quarantine_blocks(d["quarantine"], A, B)
    blocks += _vocab_blocks(d["vocab"], A, B)
    for kind in ("params", "metrics"):
        blocks += _change_blocks(d, kind, A, B)
    if "drift" in d:
        blocks += _drift_blocks(d["drift"], A, B)
    if "explain" in d:
        blocks += _explain_blocks(d["explain"], A, B)
    return blocks


def _document_blocks(docs: dict, A: str, B: str) -> list[tuple]:
    blocks: list[tuple] = [
        ("heading", "Documents"),
        (
            "table",
            ["", "documents"],
            [
                [f"at {A}", _n(docs["a"])],
                [f"at {B}", _n(docs["b"])],
                ["added", _n(docs["added"])],
                ["removed", _n(docs["removed"])],
                ["relabelled", _n(docs["relabeled"])],
                ["unchanged", _n(docs["unchanged"])],
            ],
        ),
    ]
    ex = docs["examples"]
    items = [f"added {_code(e['doc_id'])} [{_code(e['label'])}] {_quote(e)}" for e in ex["added"]]
    items += [f"removed {_code(e['doc_id'])} [{_code(e['label'])}] {_quote(e)}" for e in ex["removed"]]
    items += [
        f"relabelled {_code(e['doc_id'])} [{_code(e['label_a'])} → {_code(e['label'])}] {_quote(e)}"
        for e in ex["relabeled"]
    ]
    if items:
        blocks += [("para", "Examples:"), ("list", items)]
    return blocks


def _label_blocks(labels: dict, A: str, B: str) -> list[tuple]:
    rows = [
        [
            _code(k),
            _n(v["a"]),
            _n(v["b"]),
            _signed(v["delta"]),
            _pct(v["share_a"]),
            _pct(v["share_b"]),
            _pp(v["share_delta"]),
        ]
        for k, v in labels.items()
    ]
    return [("heading", "Labels"), ("table", ["label", A, B, "Δ", f"share {A}", f"share {B}", "Δ share"], rows)]


def _split_blocks(sp: dict, A: str, B: str) -> list[tuple]:
    rows = [
        [_code(k), _n(v["a"]), _n(v["b"]), _signed(v["delta"]), _n(v["added"]), _n(v["removed"])]
        for k, v in sp["counts"].items()
    ]
    blocks: list[tuple] = [("heading", "Splits"), ("table", ["split", A, B, "Δ", "entered", "left"], rows)]
    if not sp["moved"]:
        return [*blocks, ("para", "No document present at both revisions changed split.")]
    moved = [f"{_code(e['doc_id'])} {_code(e['split_a'])} → {_code(e['split_b'])}" for e in sp["moved_examples"]]
    return [
        *blocks,
        ("para", f"{sp['moved']:,} document(s) present at both revisions changed split (there should be none), e.g.:"),
        ("list", moved),
    ]


def _quarantine_blocks(q: dict, A: str, B: str) -> list[tuple]:
    rows = [[_code(k), _n(v["a"]), _n(v["b"]), _signed(v["delta"])] for k, v in q["by_reason"].items()]
    rows.append(["total", _n(q["total"]["a"]), _n(q["total"]["b"]), _signed(q["total"]["delta"])])
    return [("heading", "Quarantine"), ("table", ["reason", A, B, "Δ"], rows)]


def _vocab_blocks(v: dict, A: str, B: str) -> list[tuple]:
    lines = [
        f"tokens added: {v['added']:,}" + _tops(v["top_added"]),
        f"tokens dropped: {v['dropped']:,}" + _tops(v["top_dropped"]),
    ]
    if v.get("test_tokens"):
        lines.append(
            f"out-of-vocabulary rate of {B}'s test split ({v['test_tokens']:,} tokens): "
            f"{_pct(v['oov_rate_test_b_under_a'], 2)} under {A}'s vocabulary, "
            f"{_pct(v['oov_rate_test_b_under_b'], 2)} under its own"
        )
    return [
        ("heading", "Vocabulary"),
        ("table", ["", A, B, "Δ"], [["size", _n(v["size_a"]), _n(v["size_b"]), _signed(v["delta"])]]),
        ("list", lines),
    ]


def _change_blocks(d: dict, kind: str, A: str, B: str) -> list[tuple]:
    """The params or metrics that changed (`kind`), as `dvc params|metrics diff` shows them."""
    title, cols = {
        "params": ("Params", ["file", "param", A, B]),
        "metrics": ("Metrics", ["file", "metric", A, B, "Δ"]),
    }[kind]
    changes = d.get(kind)
    if changes is None:
        return [("heading", title), ("para", f"({kind} not compared)")]
    rows = [
        [_code(path), _code(key), _val(c.get("old")), _val(c.get("new"))]
        + ([_val(c.get("diff"), signed=True)] if kind == "metrics" else [])
        for path, keys in changes.items()
        for key, c in keys.items()
    ]
    blocks: list[tuple] = [("heading", title), ("table", cols, rows) if rows else ("para", f"No {kind} changed.")]
    if d.get("unreadable", {}).get(kind):
        blocks.append(("para", "Not compared: " + "; ".join(d["unreadable"][kind]) + "."))
    return blocks


def _drift_blocks(dr: dict, A: str, B: str) -> list[tuple]:
    """The drift checks of B's added documents against A (textclf.drift)."""
    blocks: list[tuple] = [("heading", f"Drift of the documents {B} added, against {A}")]
    if "error" in dr:
        return blocks + [("para", f"Not checked: {dr['error']}.")]
    if not dr["documents"]:
        return blocks + [("para", "No documents were added.")]
    rows = [
        [c["name"], _val(c["value"]), _val(c["threshold"]), "HELD" if c["held"] else "no", c["detail"]]
        for c in dr["checks"]
    ]
    blocks.append(("para", f"{dr['documents']:,} added documents, as the new-data flow's drift gate would check them:"))
    blocks.append(("table", ["check", "value", "threshold", "held", "detail"], rows))
    return blocks


def _explain_blocks(e: dict, A: str, B: str) -> list[tuple]:
    """Why the metric moved (textclf.diff.explain)."""
    blocks: list[tuple] = [("heading", f"Why {e['metric']} moved")]
    if "total" not in e or "test_set" not in e:
        return blocks + [("para", f"Not explained: {e.get('error', 'no test predictions')}.")]
    blocks.append(
        (
            "table",
            ["", e["metric"]],
            [
                [f"{A}'s model on {A}'s test split", _val(e["a"])],
                [f"{A}'s model on {B}'s test split", _val(e["a_on_b"])],
                [f"{B}'s model on {B}'s test split", _val(e["b"])],
                ["total change", _val(e["total"], signed=True)],
                ["… from the test split (test_set)", _val(e["test_set"], signed=True)],
                ["… from the model (model)", _val(e["model"], signed=True)],
            ],
        )
    )
    tc = e["test_changes"]
    blocks.append(
        (
            "table",
            ["test split change", "documents", f"share of test_set ({A}'s model)"],
            [[k, _n(v["documents"]), _val(v["share"], signed=True)] for k, v in tc.items()],
        )
    )
    f, t = e["flips"], e["train_changes"]
    by_a = e.get("predicted_by_a")
    blocks.append(
        (
            "para",
            f"Test documents with the same label at both: {f['fixed']:,} fixed, {f['broken']:,} broken. "
            f"Training documents: {t['added']:,} added, {t['removed']:,} removed, {t['relabelled']:,} relabelled"
            + (f"; {by_a:,} of {B}'s test documents predicted by {A}'s model." if by_a else "."),
        )
    )
    items = []
    for x in e["examples"]:
        causes = ", ".join(
            f"{_code(c['doc_id'])} {c['change']}"
            + (f" {_code(c['was'])}→{_code(c['label'])}" if c["change"] == "relabelled" else f" {_code(c['label'])}")
            + f" ({c['similarity']:.2f})"
            for c in x["causes"]
        )
        items.append(
            f"{x['flip']}: {_code(x['doc_id'])} {_code(x['label'])}: {_code(x['before'])} → {_code(x['after'])} "
            f"{_code(x['text'])}; nearest changed training documents: {causes or 'none'}"
        )
    if items:
        blocks.append(("list", items))
    return blocks


def _code(s) -> str:
    """A code span; a backtick inside the content would end it early, so it is swapped."""
    return "`" + str(s).replace("`", "ˋ") + "`"


def _rev_name(side: dict) -> str:
    return f"{_code(side['rev'])} ({side['commit'][:7]})" if side.get("commit") else _code(side["rev"])


def _quote(e: dict) -> str:
    return f"“{_code(e['text'])}”" if e.get("text") else ""


def _tops(items: list[dict]) -> str:
    return (" — most frequent: " + ", ".join(f"{_code(t['token'])} ({t['count']:,})" for t in items)) if items else ""


def _n(x: int) -> str:
    return f"{x:,}"


def _signed(x: int) -> str:
    return f"{x:+,}" if x else "0"


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f} pp" if round(100 * x, 1) else "0.0 pp"


def _val(x, signed: bool = False) -> str:
    """A params/metrics value as DVC reports it: numbers formatted, anything else as code."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:+.4g}" if signed else f"{x:.4g}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:+,}" if signed else f"{x:,}"
    return _code(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _plain(s: str) -> str:
    return s.replace("`", "")


def _width(s: str) -> int:
    """Terminal columns: East Asian wide/full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _numeric_col(rows: list[list[str]], i: int) -> bool:
    cells = [r[i] for r in rows if r[i] not in ("", "—", "n/a")]
    return bool(cells) and all(
        c.lstrip("+-").replace(",", "").replace(".", "").replace("%", "").replace(" pp", "").isdigit() for c in cells
    )


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[_plain(c) for c in headers]] + [[_plain(c) for c in r] for r in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    right = [False] + [_numeric_col(rows, i) for i in range(1, len(headers))]

    def line(r: list[str]) -> str:
        parts = [
            (" " * (w - _width(c)) + c) if rj else (c + " " * (w - _width(c)))
            for c, w, rj in zip(r, widths, right, strict=True)
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(cells[0]), "  " + "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
