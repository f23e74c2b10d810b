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
from pandera.typing import Series

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


class Documents(pa.DataFrameModel):
    """data/interim/documents.parquet: one row per distinct (normalised) text."""

    doc_id: Series[str] = pa.Field(unique=True, str_matches=r"^[0-9a-f]{16}$")
    text: Series[str] = pa.Field(no_blank_strings=())
    label: Series[str] = pa.Field(no_blank_strings=())
    source: Series[str]
    line: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=1)
    split: Series[str] = pa.Field(nullable=True, isin=list(SPLITS))

    class Config:
        strict = True
        coerce = False


class Rejected(pa.DataFrameModel):
    """data/interim/rejected_*.parquet: the original record, where it came from, and why."""

    record: Series[str] = pa.Field(nullable=True)
    source: Series[str]
    line: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=1)
    reason: Series[str] = pa.Field(isin=list(INGEST_REASONS + CLEAN_REASONS))
    label: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True  # an empty frame of object columns is still a valid (empty) string frame


class Clean(Documents):
    """data/interim/clean.parquet: documents plus their cleaned token list."""

    tokens: Series[TOKENS_DTYPE] = pa.Field(non_empty_lists=())  # type: ignore[valid-type]


class SplitDocs(Clean):
    """data/processed/{train,valid,test}.parquet."""

    split: Series[str] = pa.Field(isin=list(SPLITS))
    group_id: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{16}$")


class Predictions(pa.DataFrameModel):
    """reports/predictions.parquet: one row per test document; prob_<label> columns sum to 1."""

    doc_id: Series[str] = pa.Field(unique=True)
    label: Series[str]
    predicted: Series[str]
    # per-class probability columns are checked in `predictions_schema` (names depend on labels)


def predictions_schema(labels: list[str]) -> pa.DataFrameSchema:
    schema = Predictions.to_schema()
    cols = {f"prob_{c}": pa.Column(float, pa.Check.in_range(0.0, 1.0)) for c in labels}
    return schema.add_columns(cols).update_columns(
        {
            "label": {"checks": [pa.Check.isin(labels)]},
            "predicted": {"checks": [pa.Check.isin(labels)]},
        }
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
