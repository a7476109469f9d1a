"""Hyper-parameter tuning with Optuna: the search space (`space`), one trial's evaluation on
train/val only (`objective`) and the study inside a tune run (`study`)."""
