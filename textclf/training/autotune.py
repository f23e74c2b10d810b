"""autotune: an Optuna search of the train params on the valid split (fastText's
`-autotune-validation`, with a seeded sampler, pruning and a resumable trial log).

The train stage calls `search` with a function that trains one configuration and reports its
valid macro-F1 after every epoch. The search:

- starts from the params as written (trial 0), so it never ends below them on valid;
- samples the next configurations with TPE, reseeded per trial from `autotune.seed` and the
  trial number, so the same data and params give the same trials and the same choice on CPU —
  after a resume too;
- prunes a trial whose per-epoch valid macro-F1 falls below the median of earlier trials at the
  same epoch (or with successive halving);
- stops after `autotune.trials` trials or when `autotune.budget_s` seconds are spent, whichever
  comes first (a budget stop depends on the machine's speed: `stopped_by` says which);
- records every finished trial in the checkpoint folder, so a killed search resumes after the
  last finished trial and ends where an uninterrupted one would.

The test split is never an input: `search` sees only what the trial function was given.
Optuna is imported here only, so the rest of training runs without it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textclf.artifacts import write_bytes
from textclf.families.registry import family
from textclf.params import AutotuneParams, TrainParams

log = logging.getLogger("textclf.training.autotune")

LOG_FILE = "autotune.json"


class Pruned(Exception):
    """Raised by `report` when the pruner stops a trial."""


# ---------------------------------------------------------------------------------------------
# the search space: what a trial may change, per family


def suggest(trial, p: TrainParams, families: tuple[str, ...]) -> dict[str, Any]:
    """One configuration, as dotted train keys (`linear.C`, `bag.dropout`). The family first,
    then what every family shares (class weighting), then the family's own space
    (`ModelFamily.suggest`, textclf.families): the linear family's regularisation, head mix and
    features; the epoch families' optimiser step (lr with batch size: their ratio sets the step
    per document), size and regularisation. Every range and choice includes the value written in
    params.yaml (trial 0 is that value)."""

    def cat(name, choices, current):
        return trial.suggest_categorical(name, sorted(set(choices) | {current}, key=str))

    def num(name, low, high, current, log=True):
        return trial.suggest_float(name, min(low, current), max(high, current), log=log)

    name = cat("model", families, p.model) if len(families) > 1 else families[0]
    out: dict[str, Any] = {
        "model": name,
        "class_weight": cat("class_weight", ["none", "balanced"], p.class_weight),
    }
    return out | family(name).suggest(trial, p, num, cat)


def as_written(p: TrainParams, families: tuple[str, ...] = ()) -> dict[str, Any]:
    """The params as written, in the space's Optuna names (the enqueued first trial): every
    searched family's names, the written family's last (the epoch families share names)."""
    out: dict[str, Any] = {"model": p.model, "class_weight": p.class_weight}
    for name in (*(f for f in families if f != p.model), p.model):
        out |= family(name).as_written(p)
    return out


def apply(p: TrainParams, overrides: dict[str, Any]) -> TrainParams:
    """`p` with dotted overrides applied, validated like params.yaml (no autotune inside a trial)."""
    data = p.model_dump()
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    data["autotune"]["budget_s"] = 0.0
    return TrainParams.model_validate(data)


# ---------------------------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    state: str  # complete | pruned | budget | failed
    value: float | None  # best valid macro-F1 the trial reached (pruned: before it was stopped)
    epochs: int
    seconds: float
    intermediate: dict[int, float] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)
    sampled: dict[str, Any] = field(default_factory=dict)  # in Optuna's names (resume)


@dataclass
class SearchResult:
    best: Trial  # the chosen trial: the best one, or trial 0 when the best is not clearly better
    result: Any  # the trial function's result for the chosen trial
    params: TrainParams  # the chosen params (autotune off)
    trials: list[Trial]
    stopped_by: str  # trials | budget
    seconds: float
    choice: dict = field(default_factory=dict)  # best vs trial 0 on valid: delta, its standard error, kept


TrialFn = Callable[[TrainParams, Callable[[int, float], None], float], tuple[Any, bool]]


Prefer = Callable[[Any, Any], tuple[bool, dict]]


@dataclasses.dataclass
class _Progress:
    """What the search has so far: finished trials, the best one and the results it keeps."""

    done: list[Trial] = dataclasses.field(default_factory=list)
    elapsed_before: float = 0.0  # seconds spent before a resume
    best: Trial | None = None
    best_result: Any = None
    first_result: Any = None  # trial 0's (the params as written), when it completed


def search(
    p: TrainParams,
    run_trial: TrialFn,
    score: Callable[[Any], float],
    checkpoint: Path | None = None,
    fingerprint: str = "",
    restore: Callable[[Path, str], Any] | None = None,
    save: Callable[[Path, Any, str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    prefer: Prefer | None = None,
) -> SearchResult:
    """Run the search. `run_trial(params, report, deadline)` trains one configuration, calls
    `report(epoch, valid_macro_f1, final=False)` after each epoch (which raises `Pruned`; not
    after a trial's last word, `final=True`), stops by itself at
    `deadline` (a `clock()` value) and returns `(result, cut)`, `cut` telling whether the deadline
    stopped it; `score(result)` is its best valid macro-F1. With `checkpoint`, finished trials and
    the results of trial 0 and the best trial (`save`/`restore`, by name) are kept there and a
    rerun resumes after them.

    Selecting the best of many trials on one valid split overfits its noise, so the best trial
    replaces trial 0 (the params as written) only when `prefer(first_result, best_result)` says
    so — the train stage asks for a valid-F1 gain above one standard error of the paired
    difference (the one-standard-error rule)."""
    import optuna

    at: AutotuneParams = p.autotune
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    families = tuple(dict.fromkeys((p.model, *at.families)))  # the family as written is always searched
    study = optuna.create_study(direction="maximize", pruner=_pruner(at.pruner, at.trials))
    if checkpoint is not None:
        checkpoint.mkdir(parents=True, exist_ok=True)
    got = _resume(optuna, study, checkpoint, fingerprint, restore) if checkpoint and restore else _Progress()
    start = clock() - got.elapsed_before
    deadline = start + at.budget_s
    stopped_by = "trials"
    for number in range(len(got.done), at.trials):
        if got.best is not None and clock() >= deadline:
            stopped_by = "budget"
            break
        rec, result = _run_trial(optuna, study, number, p, families, run_trial, score, deadline, clock)
        got.done.append(rec)
        # a trial the budget cut counts only when no trial finished before it
        usable = rec.state == "complete" or (rec.state == "budget" and got.best is None and result is not None)
        if number == 0 and rec.state == "complete":
            got.first_result = result
            if checkpoint is not None and save is not None:
                save(checkpoint, result, "first")
        if usable and (got.best is None or rec.value > got.best.value):
            got.best, got.best_result = rec, result
            if checkpoint is not None and save is not None:
                save(checkpoint, result, "best")
        if checkpoint is not None:
            _save_log(checkpoint, fingerprint, got.done, clock() - start, got.best.number if got.best else None)
        if rec.state == "budget":
            stopped_by = "budget"
            break
    if got.best is None:
        raise RuntimeError("autotune: no trial finished within train.autotune.budget_s")
    best, best_result, choice = _choose(got, prefer)
    return SearchResult(best, best_result, apply(p, best.params), got.done, stopped_by, clock() - start, choice)


def _resume(optuna, study, checkpoint: Path, fingerprint: str, restore: Callable[[Path, str], Any]) -> _Progress:
    """The finished trials a checkpoint holds (added to `study`) and the results it kept; nothing
    when the checkpoint is missing, from other params, or incomplete."""
    resumed = _load_log(checkpoint, fingerprint)
    if resumed is None:
        return _Progress()
    done, elapsed_before, best_number = resumed
    best = next((t for t in done if t.number == best_number), None)
    best_result = restore(checkpoint, "best") if best is not None else None
    first_ok = bool(done) and done[0].state == "complete"
    first_result = restore(checkpoint, "first") if first_ok else None
    if (best is not None and best_result is None) or (first_ok and first_result is None):
        return _Progress()  # incomplete
    for t in done:
        study.add_trial(_frozen(optuna, t))
    if done:
        log.info("autotune: resuming after %d finished trial(s)", len(done))
    return _Progress(done, elapsed_before, best, best_result, first_result)


def _run_trial(optuna, study, number: int, p: TrainParams, families, run_trial: TrialFn, score, deadline, clock):
    """Trial `number` (trial 0: the params as written), told to `study`: (its record, its result)."""
    at = p.autotune
    study.sampler = optuna.samplers.TPESampler(
        seed=at.seed * 1_000_003 + number,
        multivariate=True,
        group=True,
        n_startup_trials=max(4, at.trials // 3),
    )
    if number == 0:
        study.enqueue_trial(as_written(p, families))
    trial = study.ask()
    overrides = suggest(trial, p, families)
    t0 = clock()
    reached: dict[int, float] = {}

    def report(epoch: int, value: float, final: bool = False) -> None:
        reached[epoch] = value
        trial.report(value, epoch)
        if not final and trial.should_prune():
            raise Pruned()

    state, result = "complete", None
    try:
        result, cut = run_trial(apply(p, overrides), report, deadline)
        if cut:
            state = "budget"
    except Pruned:
        state = "pruned"
    value = score(result) if result is not None else (max(reached.values()) if reached else None)
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[-1]
    rec = Trial(
        number,
        overrides,
        state,
        value,
        max(reached, default=0),
        clock() - t0,
        dict(reached),
        dict(frozen.system_attrs),
        {k: optuna.distributions.distribution_to_json(d) for k, d in frozen.distributions.items()},
        dict(frozen.params),
    )
    log.info(
        "autotune trial %d/%d %s: %s; valid macro-F1 %s (%.1f s)",
        number + 1,
        at.trials,
        state,
        _describe(overrides),
        "n/a" if value is None else f"{value:.4f}",
        rec.seconds,
    )
    return rec, result


def _choose(got: _Progress, prefer: Prefer | None) -> tuple[Trial, Any, dict]:
    """The best trial, unless `prefer` keeps trial 0 (the params as written): (trial, result, why)."""
    best, best_result = got.best, got.best_result
    if best.number == 0 or got.first_result is None or prefer is None:
        return best, best_result, {}
    switch, choice = prefer(got.first_result, best_result)
    choice = {**choice, "kept_trial_0": not switch}
    if switch:
        return best, best_result, choice
    log.info(
        "autotune: trial %d beats trial 0 on valid by %+.4f, not more than its standard error %.4f: "
        "keeping the params as written",
        best.number,
        choice.get("delta", float("nan")),
        choice.get("se", float("nan")),
    )
    return got.done[0], got.first_result, choice


def _pruner(name: str, trials: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 4), n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _frozen(optuna, t: Trial):
    dists = {k: optuna.distributions.json_to_distribution(d) for k, d in t.distributions.items()}
    params = {k: v for k, v in t.sampled.items() if k in dists}
    complete = t.state == "complete"
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED,
        value=t.value if complete else None,
        params=params,
        distributions=dists,
        intermediate_values={int(k): v for k, v in t.intermediate.items()},
        system_attrs=t.system_attrs,
    )


def _save_log(folder: Path, fingerprint: str, trials: list[Trial], elapsed: float, best: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "fingerprint": fingerprint,
        "elapsed_s": elapsed,
        "best": best,
        "trials": [t.__dict__ for t in trials],
    }
    write_bytes(folder / LOG_FILE, json.dumps(data, sort_keys=True).encode("utf-8"))


def _load_log(folder: Path, fingerprint: str) -> tuple[list[Trial], float, int | None] | None:
    path = folder / LOG_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("fingerprint") != fingerprint:
            log.info("autotune log is for other data or params: starting the search over")
            return None
        trials = [
            Trial(**{**t, "intermediate": {int(k): v for k, v in t["intermediate"].items()}}) for t in data["trials"]
        ]
        return trials, float(data["elapsed_s"]), data.get("best")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring unreadable autotune log %s: %s", path, err)
        return None


def summary(res: SearchResult) -> dict:
    """What reports/train/autotune.json records (deterministic values only: no seconds)."""
    states = [t.state for t in res.trials]
    return {
        "trials": len(res.trials),
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "stopped_by": res.stopped_by,
        # a search cut by its budget ran as many trials as this machine had time for
        "reproducible": res.stopped_by == "trials",
        "best_trial": res.best.number,
        "best_valid_macro_f1": round(res.best.value, 6),
        "chosen": {k: v for k, v in sorted(res.best.params.items())},
        **(
            {"over_trial_0": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.choice.items()}}
            if res.choice
            else {}
        ),
    }


def trial_rows(res: SearchResult) -> list[dict]:
    """One row a trial for `dvc plots` (trial number against valid macro-F1)."""
    rows, best = [], -math.inf
    for t in res.trials:
        if t.value is not None and t.state == "complete":
            best = max(best, t.value)
        rows.append(
            {
                "trial": t.number,
                "valid_macro_f1": None if t.value is None else round(t.value, 6),
                "best_so_far": None if best == -math.inf else round(best, 6),
                "model": t.params.get("model"),
                "state": t.state,
                "epochs": t.epochs,
            }
        )
    return rows
