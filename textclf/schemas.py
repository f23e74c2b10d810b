"""pandera contracts for every artifact a stage writes.

Each stage validates its output once, lazily (all failures at once), before writing it, through
`validate()`: on failure the failure cases go to reports/validation/<stage>.json and the stage
exits non-zero with a summary naming column, check and count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc
from pandera.errors import SchemaErrors
from pandera.extensions import register_check_method

from textclf.artifacts import arrow_values, write_json
from textclf.errors import ContractError
from textclf.paths import VALIDATION_DIR

SPLITS = ("train", "valid", "test")

# Why a record was quarantined. Ingest and clean reasons share one vocabulary so that counts and
# diffs across versions line up.
INGEST_REASONS = (
    "empty",  # empty or whitespace-only line/file
    "marker",  # a `<停止词>` marker line in a text file: not a document
    "too_long",  # longer than ingest.max_chars after normalisation
    "undecodable",  # bytes that decode in no accepted encoding
    "binary",  # a binary file (NUL bytes) where text was expected
    "missing_label",  # tabular record without a label
    "invalid_split",  # split column value not in train/valid/test
    "label_conflict",  # the same text appears with different labels: every copy
    "malformed",  # a line that does not parse in its format (bad JSON, no __label__)
    "unsupported_file",  # a file in a text directory that is neither <label>.txt nor in <label>/
)
CLEAN_REASONS = ("empty_after_cleaning",)
TOKENS_DTYPE = pd.ArrowDtype(arrow.list_(arrow.string()))


@register_check_method(statistics=[], supported_types=[pd.Series])
def non_empty_lists(series: pd.Series) -> pd.Series:
    """Every value is a non-null list with at least one element (vectorised over Arrow)."""
    arr = arrow_values(series) if isinstance(series.dtype, pd.ArrowDtype) else arrow.array(series)
    lengths = pc.fill_null(pc.list_value_length(arr), 0)
    return pd.Series(pc.greater(lengths, 0).to_numpy(zero_copy_only=False), index=series.index)


@register_check_method(statistics=[], supported_types=[pd.Series])
def no_blank_strings(series: pd.Series) -> pd.Series:
    return series.str.strip().str.len() > 0


# The contracts are DataFrameSchema objects, not class-based DataFrameModels: building a model's
# schema makes pandera import dask.dataframe (to learn its index types) whenever dask is
# installed, about 0.8 s of every stage's start-up.
_HEX16 = r"^[0-9a-f]{16}$"

Documents = pa.DataFrameSchema(
    {
        "doc_id": pa.Column(str, pa.Check.str_matches(_HEX16), unique=True),
        "text": pa.Column(str, pa.Check.no_blank_strings()),
        "label": pa.Column(str, pa.Check.no_blank_strings()),
        "source": pa.Column(str),
        "line": pa.Column(pd.Int64Dtype(), pa.Check.ge(1), nullable=True),
        "split": pa.Column(str, pa.Check.isin(list(SPLITS)), nullable=True),
    },
    strict=True,
    coerce=False,
    name="Documents",
    description="data/interim/documents.parquet: one row per distinct (normalised) text.",
)

Rejected = pa.DataFrameSchema(
    {
        "record": pa.Column(str, nullable=True),
        "source": pa.Column(str),
        "line": pa.Column(pd.Int64Dtype(), pa.Check.ge(1), nullable=True),
        "reason": pa.Column(str, pa.Check.isin(list(INGEST_REASONS + CLEAN_REASONS))),
        "label": pa.Column(str, nullable=True),
    },
    strict=True,
    coerce=True,  # an empty frame of object columns is still a valid (empty) string frame
    name="Rejected",
    description="data/interim/rejected_*.parquet: the original record, where it came from, and why.",
)

Clean = Documents.add_columns({"tokens": pa.Column(TOKENS_DTYPE, pa.Check.non_empty_lists())})
Clean.name, Clean.description = "Clean", "data/interim/clean.parquet: documents plus their cleaned token list."

SplitDocs = Clean.update_columns({"split": {"nullable": False}}).add_columns(
    {"group_id": pa.Column(str, pa.Check.str_matches(_HEX16))}
)
SplitDocs.name, SplitDocs.description = "SplitDocs", "data/processed/{train,valid,test}.parquet."

Predictions = pa.DataFrameSchema(
    {
        "doc_id": pa.Column(str, unique=True),
        "label": pa.Column(str),
        "predicted": pa.Column(str),
        # per-class probability columns are checked in `predictions_schema` (names depend on labels)
    },
    coerce=False,
    name="Predictions",
    description="reports/predictions.parquet: one row per test document; prob_<label> columns sum to 1.",
)


def predictions_schema(labels: list[str]) -> pa.DataFrameSchema:
    cols = {f"prob_{c}": pa.Column(float, pa.Check.in_range(0.0, 1.0)) for c in labels}
    return Predictions.add_columns(cols).update_columns(
        {
            "label": {"checks": [pa.Check.isin(labels)]},
            "predicted": {"checks": [pa.Check.isin(labels)]},
        }
    )


Corrections = pa.DataFrameSchema(
    {
        "doc_id": pa.Column(str, pa.Check.str_matches(_HEX16)),
        "label": pa.Column(str, pa.Check.no_blank_strings()),
        "note": pa.Column(str),
        "reviewer": pa.Column(str),
    },
    strict=True,
    coerce=False,
    name="Corrections",
    description="data/labels/corrections.csv: a reviewer's label for a document (later rows win).",
)

Suspects = pa.DataFrameSchema(
    {
        "rank": pa.Column(int, pa.Check.ge(1), unique=True),
        "doc_id": pa.Column(str, pa.Check.str_matches(_HEX16), unique=True),
        "split": pa.Column(str, pa.Check.isin(list(SPLITS))),
        "label": pa.Column(str),
        "suggested": pa.Column(str),
        "self_confidence": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "text": pa.Column(str),
    },
    strict=True,
    coerce=False,
    name="Suspects",
    description="reports/labels/suspects.parquet: the review queue, most likely mislabelled first.",
)


PROBA_DECIMALS = 6


def round_proba(proba: np.ndarray) -> np.ndarray:
    """Probabilities to PROBA_DECIMALS decimals, as every predictions file and the metrics computed
    from it record them: BLAS on another CPU flips the last bits of a float, never the sixth
    decimal (but for the rare value on a rounding edge), so a rebuild writes the same bytes."""
    return np.round(np.asarray(proba, dtype=np.float64), PROBA_DECIMALS)


def predictions_frame(df: pd.DataFrame, labels: list[str], proba: np.ndarray) -> pd.DataFrame:
    """The predictions contract shared by model and baseline (textclf.schemas.predictions_schema)."""
    out = pd.DataFrame(
        {
            "doc_id": df["doc_id"].to_numpy(dtype=object),
            "label": df["label"].to_numpy(dtype=object),
            "predicted": np.asarray(labels, dtype=object)[proba.argmax(axis=1)] if len(df) else [],
        }
    )
    for j, c in enumerate(labels):
        out[f"prob_{c}"] = proba[:, j].astype(np.float64)  # rounded by the caller: see round_proba
    for c in ("doc_id", "label", "predicted"):
        out[c] = out[c].astype("str")
    return out


def _jsonable(v):
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return None if v != v else v
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)


def _summary(err: SchemaErrors) -> tuple[str, list[dict]]:
    fc = err.failure_cases
    rows = []
    lines = []
    grouped = fc.groupby(["column", "check"], dropna=False, sort=True).size()
    for (column, check), count in grouped.items():
        lines.append(f"  column {column!s}: check {check!s} failed for {count} value(s)")
    for rec in fc.head(1000).to_dict(orient="records"):
        rows.append({k: _jsonable(v) for k, v in rec.items()})
    return "\n".join(lines), rows


def validate(df: pd.DataFrame, schema, stage: str, name: str | None = None) -> pd.DataFrame:
    """Validate lazily; on failure write reports/validation/<stage>.json and raise ContractError."""
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        summary, rows = _summary(err)
        report = VALIDATION_DIR / f"{stage}.json"
        write_json(
            {
                "stage": stage,
                "artifact": name,
                "summary": summary.splitlines(),
                "failure_cases": rows,
            },
            report,
        )
        raise ContractError(stage, summary, report) from None
