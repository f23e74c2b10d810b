"""The data half's cores: ingest, clean, split, vocab (frames and params in, frames out)."""
