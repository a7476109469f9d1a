"""Vectorised backtests of model scores."""
