"""User commands on top of the pipeline (console script `textclf`)."""
