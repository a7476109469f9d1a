"""Walk-forward evaluation: folds (folds.py), per-fold refits run in parallel (execute.py), the stage (stage.py)."""
