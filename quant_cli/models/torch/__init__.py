"""Torch models: the one training loop (loop.py), window gathering (windows.py), losses and the
network families (mlp, recurrent, tcn, transformer). Imported on first fit or load only, so the
model registry (every CLI command) does not import torch."""
