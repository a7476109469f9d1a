"""Models: one contract (base.py), one registry, one file per family."""
