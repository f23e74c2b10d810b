"""DVC entry points, one per stage: read params, call the library (textclf), validate, write."""
