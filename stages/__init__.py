"""textclf pipeline stages: one module per DVC stage, plus what they share."""
