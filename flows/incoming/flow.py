"""New data: files dropped into a landing folder become training data only if they pass the
ingest contract, agree with the corpus, and the retrained model is not worse than a reference.

    python -m flows.incoming                       # data/incoming → data/raw, gate on test.macro_f1
    python -m flows.incoming --tolerance 0.02 --reference best

One run is a transaction (flows.incoming.transaction) over claimed landing items (flows.incoming.landing):

1. Recover: a journal left by a killed run is finished (it had committed) or undone; items in a
   dead run's staging folder go back to the landing folder.
2. Refuse to start when the raw folder has uncommitted changes or the git index is not clean.
3. Claim each ready item by one atomic rename; read it once (no link followed) into a private
   copy. Links, FIFOs, devices and hidden files inside folders go to quarantine with a reason.
4. Check each copy against the ingest contract (flows.incoming.intake), then the batch against the corpus
   (label flips and split moves are quarantined for review, not applied).
5. Place the accepted copies in the raw folder (journalled), `dvc add` it, run the pipeline.
6. Gate (flows.incoming.gate) against the committed model, or a fixed reference (`first`, `best`).
7. Promote: one commit of the pipeline's files; `dvc push` when a default remote is configured.
   Then the claimed originals are removed — only those unchanged since they were read.

Any failure from step 5 on undoes the run's own changes (never `--force` over user data) and puts
the claimed items back in the landing folder — or in quarantine when the data broke a stage's
contract or the gate said no. Nothing is deleted unless its bytes are committed: every item ends
committed, quarantined with a reason, or in the landing folder.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from prefect import flow

from flows import dvcops, repolock, report
from flows.incoming import landing as landing_zone
from flows.incoming import transaction
from flows.incoming.claims import Items, checks_survived, claim_items, recover, remember_claims
from flows.incoming.gate import (
    REFERENCES,
    decide_against,
    drift_of,
)
from flows.incoming.intake import (
    Verdict,
    batch_problems,
    known_labels,
    place,
    raw_spec,
)
from flows.incoming.options import LANDING, METRIC, QUARANTINE, IncomingOptions, build_parser
from flows.incoming.tasks import check_task, commit, push, track_raw
from flows.incoming.transaction import PROMOTE_PREFIX, Journal
from flows.pipeline import pipeline, resolve_repo
from flows.prefect_server import local_server_settings
from flows.shell import git, run_logger
from textclf.errors import ContractError, ParamsError, RunError, TextclfError
from textclf.params import load_params


def landing_files(folder: Path, min_age_s: float) -> list[Path]:
    """The landing items a run would claim now (see flows.incoming.landing)."""
    return landing_zone.ready_items(folder, min_age_s, run_logger())


# ---------------------------------------------------------------------------------------------
# the flow


@flow(name="textclf-incoming")
def incoming(
    repo: str = ".",
    landing: str = LANDING,
    quarantine_dir: str = QUARANTINE,
    metric: str = METRIC,
    metrics_file: str = report.METRICS_FILE,
    tolerance: float = 0.01,
    predictions_file: str = report.PREDICTIONS_FILE,
    reference: str = "head",
    target: str | None = None,
    params: list[str] | None = None,
    min_age_s: float = 5.0,
    max_bad_fraction: float = 0.2,
    allow_new_labels: bool = False,
    allow_drift: bool = False,
    push_remote: bool = True,
    register_stage: str | None = "prod",
    retries: int = 2,
    retry_delay_s: float = 10.0,
    lock_timeout_s: float = 600.0,
) -> dict:
    """Check new files, add the good ones, retrain, promote if not worse (see module docstring).
    Every parameter is an `IncomingOptions` field (the command line's options)."""
    opts = IncomingOptions(
        repo=repo,
        landing=landing,
        quarantine_dir=quarantine_dir,
        metric=metric,
        metrics_file=metrics_file,
        predictions_file=predictions_file,
        tolerance=tolerance,
        reference=reference,
        target=target,
        params=params,
        min_age_s=min_age_s,
        max_bad_fraction=max_bad_fraction,
        allow_new_labels=allow_new_labels,
        allow_drift=allow_drift,
        push_remote=push_remote,
        register_stage=register_stage,
        retries=retries,
        retry_delay_s=retry_delay_s,
        lock_timeout_s=lock_timeout_s,
    )
    if opts.reference not in REFERENCES:
        raise ParamsError(f"reference must be one of {', '.join(REFERENCES)}, got {opts.reference!r}")
    root = resolve_repo(opts.repo)
    _paths(root, opts)
    with repolock.run_slot(root, opts.lock_timeout_s, what="incoming flow"):
        return _run(root, opts)


def _paths(root: Path, opts: IncomingOptions) -> tuple[Path, Path]:
    """(landing, quarantine) folders, once every path parameter is checked to lie inside the
    repository and the overrides to touch params.yaml only: flow parameters are untrusted input
    (anyone who reaches the Prefect API can start a run), so a refusal comes before anything is
    claimed, moved or written."""
    landing_dir = dvcops.inside_repo(root, opts.landing, "landing")
    quarantine_path = dvcops.inside_repo(root, opts.quarantine_dir, "quarantine_dir")
    for what in ("metrics_file", "predictions_file"):
        dvcops.inside_repo(root, getattr(opts, what), what)
    dvcops.check_override_targets(root, opts.params)
    return landing_dir, quarantine_path


def _run(root: Path, opts: IncomingOptions) -> dict:
    """One run: claim and check the landing items, apply the accepted ones (place, retrain, gate,
    commit), settle (quarantine, give back or remove the originals; register; push)."""
    landing_dir, quarantine_path = _paths(root, opts)
    outcome: dict = {
        "accepted": [],
        "rejected": [],
        "promoted": False,
        "commit": None,
        "pushed_to": None,
        "decision": None,
        "drift": [],
    }
    claimed = _claim(root, opts, landing_dir, quarantine_path)
    if claimed is None:
        return outcome
    journal, items, spec, claimed_items = claimed
    accepted = _check(root, opts, items, spec, claimed_items, outcome)
    if not accepted:
        journal.close(root)
        landing_zone.prune_staging(landing_dir)
        report.publish_incoming(outcome)
        return outcome
    decision = _apply(root, opts, journal, items, spec, accepted, landing_dir, outcome)
    return _settle(root, opts, journal, items, accepted, landing_dir, outcome, decision)


def _claim(root: Path, opts: IncomingOptions, landing_dir: Path, quarantine_path: Path):
    """Recover a killed run, then claim the ready landing items into a new staging folder under a
    new journal: (journal, items, raw spec, claimed items), or None when nothing is ready."""
    logger = run_logger()
    recover(root, landing_dir, quarantine_path, opts.push_remote)
    ready = landing_files(landing_dir, opts.min_age_s)
    if not ready:
        logger.info("no new files in %s", landing_dir)
        return None
    spec = raw_spec(root)
    transaction.check_preconditions(root, spec.folder)
    journal = Journal(run=uuid.uuid4().hex[:12], head=git(root, "rev-parse", "HEAD").stdout.strip(), staging="")
    staging = landing_zone.new_staging(landing_dir)
    journal.staging = str(staging.relative_to(root))
    journal.save(root)
    items = Items(root, journal, landing_dir, quarantine_path)
    claimed = claim_items(ready, staging, items)
    remember_claims(root, journal, claimed)
    transaction.fault_point("claimed")
    return journal, items, spec, claimed


def _check(root: Path, opts: IncomingOptions, items: Items, spec, claimed: list, outcome: dict) -> list:
    """Check every claimed item, then the accepted ones as a batch (duplicates, drift); the
    rejected are quarantined. The accepted (claimed item, verdict) pairs."""
    logger = run_logger()
    labels = known_labels(root)
    verdicts: dict[str, tuple[landing_zone.Claimed, Verdict, object]] = {}
    for c in claimed:
        items.note(c.name, "checking")  # a run killed here: the next one counts it against this item
        transaction.fault_point("checking")
        v, docs = check_task.with_options(task_run_name=f"check-{c.name}")(
            str(c.copy), str(root), spec, labels, opts.max_bad_fraction, opts.allow_new_labels
        )
        items.note(c.name, "checked")
        checks_survived(root, c.name)
        verdicts[c.name] = (c, v, docs)
    accepted = [(c, v, d) for c, v, d in verdicts.values() if v.accepted]
    for name, why in batch_problems(root, [(c.name, d) for c, _, d in accepted]).items():
        c, v, _ = verdicts[name]
        verdicts[name] = (c, Verdict(v.file, False, why, v.stats), None)
    outcome["drift"], drift_reason = drift_of(root, [d for _, v, d in verdicts.values() if v.accepted])
    if drift_reason:
        if opts.allow_drift:
            logger.warning("%s; taken anyway (--allow-drift)", drift_reason.split(" — ")[0])
        else:
            for name, (c, v, _) in list(verdicts.items()):
                if v.accepted:
                    verdicts[name] = (c, Verdict(v.file, False, drift_reason, v.stats), None)
    for c, v, _ in verdicts.values():
        if not v.accepted:
            items.quarantine(c.original, c.name, v.reason)
    accepted = [(c, v) for c, v, _ in verdicts.values() if v.accepted]
    outcome["rejected"] = [asdict(v) for _, v, _ in verdicts.values() if not v.accepted]
    outcome["accepted"] = [asdict(v) for _, v in accepted]
    transaction.fault_point("checked")
    return accepted


def _apply(
    root: Path,
    opts: IncomingOptions,
    journal: Journal,
    items: Items,
    spec,
    accepted: list,
    landing_dir: Path,
    outcome: dict,
):
    """Place the accepted files, retrain through the pipeline flow, gate, and commit a promotion.
    A failure undoes the run's changes: files that broke a contract are quarantined, the rest
    given back for the next run. The gate's decision."""
    encoding = load_params("ingest", root / "params.yaml").encoding
    params_files = sorted({"params.yaml", *transaction.dvc_params_files(opts.params)})
    transaction.capture(root, journal, spec.folder, params_files, opts.target)
    committed_metrics = report.committed_metrics(root, opts.metrics_file)
    committed_preds = report.committed_predictions(root, opts.predictions_file)
    try:
        for c, _ in accepted:
            place(c.copy, root, spec, journal, encoding)
        journal.phase = "placed"
        journal.save(root)
        transaction.fault_point("placed")
        track_raw(str(root), spec.folder, journal.raw_in_git)
        transaction.fault_point("tracked")
        pipeline(
            target=opts.target,
            params=opts.params,
            keep_params=True,
            repo=str(root),
            retries=opts.retries,
            retry_delay_s=opts.retry_delay_s,
            lock_timeout_s=opts.lock_timeout_s,
            metrics_file=opts.metrics_file,
            experiment="never",  # inside the transaction: the promotion commit is the record
        )
        transaction.fault_point("pipeline")
        decision = decide_against(
            root,
            opts.reference,
            report.read_predictions(root, opts.predictions_file),
            report.read_metrics(root, opts.metrics_file),
            opts.metric,
            opts.tolerance,
            opts.predictions_file,
            opts.metrics_file,
            committed_preds,
            committed_metrics,
        )
        outcome["decision"] = asdict(decision)
        transaction.fault_point("gated")
        if decision.promote:
            names = ", ".join(c.name for c, _ in accepted)
            message = (
                f"{PROMOTE_PREFIX} ({names})\n\n{decision.reason}\n"
                + "".join(f"- {v['file']}: {v['reason']}\n" for v in outcome["accepted"])
                + (f"params overrides: {', '.join(opts.params)}\n" if opts.params else "")
            )
            journal.commit = commit(str(root), transaction.changed_paths(root, journal), message)
            journal.phase = "committed"
            journal.save(root)
            outcome["commit"] = git(root, "rev-parse", "--short", journal.commit).stdout.strip()
            outcome["promoted"] = True
            transaction.fault_point("committed")
    except ContractError as err:  # the new data broke a stage's contract
        _undo(root, journal)
        for c, _ in accepted:
            items.quarantine(c.original, c.name, f"the pipeline failed on the new data: {err}")
        outcome["decision"] = {"promote": False, "reason": f"pipeline failed: {err}"}
        _finish(root, journal, landing_dir, outcome)
        raise
    except BaseException as err:  # not the data's fault (or not known to be): try again next run
        _undo(root, journal)
        for c, _ in accepted:
            items.give_back(c.original, c.name, f"the run failed ({type(err).__name__}); next run")
        _finish(root, journal, landing_dir, None)
        raise
    return decision


def _settle(
    root: Path,
    opts: IncomingOptions,
    journal: Journal,
    items: Items,
    accepted: list,
    landing_dir: Path,
    outcome: dict,
    decision,
) -> dict:
    """After the gate: not promoted, undo and quarantine; promoted, remove the committed
    originals, register the models and push. Register and push failures fail the run after."""
    logger = run_logger()
    if not outcome["promoted"]:
        logger.warning("not promoted: %s", decision.reason)
        _undo(root, journal)
        for c, _ in accepted:
            items.quarantine(c.original, c.name, f"promotion gate: {decision.reason}")
        _finish(root, journal, landing_dir, outcome)
        return outcome
    for c, _ in accepted:
        if landing_zone.remove_committed(c, landing_dir):
            logger.warning(
                "%s changed after it was taken: its new bytes are back in the landing folder",
                c.name,
            )
    errors = []
    if opts.register_stage:
        outcome["registered"], register_error = _register(root, journal.commit, opts.register_stage)
        if register_error:
            errors.append(register_error)
    if opts.push_remote:
        try:
            outcome["pushed_to"] = push(str(root))
        except Exception as err:  # noqa: BLE001 - the commit stands; reported below
            errors.append(f"promoted in commit {outcome['commit']}, but `dvc push` failed: {err}; run `dvc push`")
    _finish(root, journal, landing_dir, outcome)
    transaction.fault_point("done")
    if errors:
        raise RunError("; ".join(errors))
    return outcome


def _register(root: Path, commit: str, stage: str) -> tuple[list[str], str | None]:
    """GTO tags for the models the promotion commit changed: (tags, error message or None). A
    commit that changed no declared model (a data-only target) registers nothing."""
    from textclf import registry

    try:
        names = registry.changed_artifacts(root, commit)
        if not names:
            run_logger().info("the promotion changed no model declared in dvc.yaml: nothing to register")
            return [], None
        done = registry.promote(root, stage=stage, rev=commit, artifacts=names, message=f"{PROMOTE_PREFIX}")
    except Exception as err:  # noqa: BLE001 - the commit stands: reported, and the run still finishes
        return [], f"promoted in commit {commit[:12]}, but registering the model failed: {err}; run `textclf promote`"
    tags = [t for d in done for t in (d.version_tag, d.stage_tag)]
    run_logger().info("registered: %s", ", ".join(tags))
    return tags, None


def _undo(root: Path, journal: Journal) -> None:
    transaction.undo_raw(root, journal, run_logger())
    transaction.restore_pipeline_files(root, journal, run_logger())
    run_logger().info("workspace restored to %s", report.head_commit(root))


def _finish(root: Path, journal: Journal, landing_dir: Path, outcome: dict | None) -> None:
    journal.close(root)
    landing_zone.prune_staging(landing_dir)
    if outcome is not None:
        report.publish_incoming(outcome)


def main(argv: list[str] | None = None) -> int:

    args = vars(build_parser().parse_args(argv))
    try:
        opts = IncomingOptions(**{k: v for k, v in args.items() if v is not None or k == "target"})
        with local_server_settings():
            out = incoming(**opts.model_dump())
    except TextclfError as err:
        print(f"incoming failed: {err}", file=sys.stderr)
        return 1
    for v in out["accepted"]:
        print(f"accepted {v['file']}: {v['reason']}")
    for v in out["rejected"]:
        print(f"rejected {v['file']}: {v['reason']}")
    if out["decision"]:
        print(("promoted" if out["promoted"] else "not promoted") + f": {out['decision']['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
