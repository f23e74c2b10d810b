"""`textclf diff`: what changed *in the data* between two revisions (core, read, render)."""
