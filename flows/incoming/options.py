"""The new-data flow's options: one pydantic model for the flow's parameters, and the command
line generated from it (one option per field). No Prefect here."""

from __future__ import annotations

import argparse

from pydantic import BaseModel, ConfigDict, Field

from flows import report
from flows.incoming.gate import REFERENCES

DESCRIPTION = (
    "New data: files dropped into a landing folder become training data only if they pass the\n"
    "ingest contract, agree with the corpus, and the retrained model is not worse than a reference."
)
LANDING = "data/incoming"
QUARANTINE = "data/quarantine"
METRIC = "test.macro_f1"


class IncomingOptions(BaseModel):
    """The new-data flow's options: one model for the flow's parameters and its command line."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(".", description="project root")
    landing: str = Field(LANDING, description="folder new files are dropped into (repo-relative)")
    quarantine_dir: str = Field(QUARANTINE, description="where rejected files go, each with a .reason.txt")
    metric: str = Field(METRIC, description="dotted key in the metrics file the gate compares")
    metrics_file: str = Field(report.METRICS_FILE, description="the metrics file the gate reads")
    predictions_file: str = Field(
        report.PREDICTIONS_FILE,
        description="test predictions both models are scored from, on the same documents",
    )
    tolerance: float = Field(0.01, ge=0, description="how much worse than the reference is still promoted")
    reference: str = Field("head", description=f"the model to be no worse than: one of {', '.join(REFERENCES)}")
    target: str | None = Field(None, description="pipeline target stage (default: all stages)")
    params: list[str] | None = Field(None, description="params overrides for the retraining, committed if promoted")
    min_age_s: float = Field(5.0, ge=0, description="leave items modified in the last N seconds")
    max_bad_fraction: float = Field(
        0.2, ge=0, le=1, description="reject a file if more of its records would be quarantined"
    )
    allow_new_labels: bool = Field(False, description="accept files that add classes")
    allow_drift: bool = Field(False, description="take a batch the drift gate holds (params.yaml drift.*)")
    push_remote: bool = Field(True, description="dvc push after promotion when a default remote is configured")
    register_stage: str | None = Field(
        "prod",
        pattern=r"^([a-z][a-z0-9-]*)?$",
        description="after a promotion, register the models it changed (GTO tags) and assign this stage; "
        "empty or None: do not register",
    )
    retries: int = Field(2, ge=0, description="retries of a failed stage")
    retry_delay_s: float = Field(10.0, ge=0, description="first retry delay (doubles)")
    lock_timeout_s: float = Field(600.0, ge=0, description="seconds to wait for another run on this repository")


# ---------------------------------------------------------------------------------------------
# command line: one option per IncomingOptions field


# options turned off by a flag of their own: (flag, the value it sets, help, the metavar of the
# option's own flag when it also takes a value, else None)
OFF_SWITCHES = {
    "push_remote": ("--no-push", False, "do not dvc push after promotion", None),
    "register_stage": ("--no-register", "", "do not register the promoted models in the model registry", "STAGE"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.incoming", description=DESCRIPTION)
    for name, f in IncomingOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{f.description} (default: {f.default})"
        if name == "params":
            p.add_argument(
                "-S",
                "--set-param",
                dest="params",
                action="append",
                metavar="SECTION.KEY=VALUE",
                help=help_text,
            )
        elif name in OFF_SWITCHES:
            off, value, off_help, metavar = OFF_SWITCHES[name]
            p.add_argument(off, dest=name, action="store_const", const=value, default=f.default, help=off_help)
            if metavar:
                p.add_argument(flag, dest=name, default=f.default, metavar=metavar, help=help_text)
        elif f.annotation is bool:
            p.add_argument(flag, dest=name, action="store_true", help=help_text)
        else:
            kind = {float: float, int: int}.get(f.annotation, str)
            p.add_argument(
                flag,
                dest=name,
                type=kind,
                default=f.default,
                help=help_text,
                **({"choices": REFERENCES} if name == "reference" else {}),
            )
    return p
