"""Training: the fit loop, distributed runs, checkpoints, the linear family, autotune."""
