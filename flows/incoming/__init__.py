"""The new-data feature: files dropped into a landing folder are checked, added, retrained on and
promoted only if the model is not worse (`python -m flows.incoming`).

Read in this order:
- `flow`: the Prefect flow and `main`; one run claims, checks, applies and settles (`_claim`,
  `_check`, `_apply`, `_settle`);
- `options`: its options, one pydantic model, and the command line generated from it;
- `landing`, `claims`: the landing folder, claimed items and their ledger;
- `intake`: the checks of each file and of the batch (ingest's contract, shape, labels);
- `transaction`: what a run may change, the journal of every change, recovery and the
  promotion commit's name;
- `gate`: the decisions: is the new model no worse than the reference, is the batch like the
  corpus (drift);
- `tasks`: the Prefect tasks the flow runs (check, track, commit, push).

Nothing here imports the flow module, so the parts are testable without Prefect running.
"""
