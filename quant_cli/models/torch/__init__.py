"""Torch models: the one training loop (loop.py), window gathering (windows.py), losses, the shared
declarations (config.py, heads.py) and one file per architecture (mlp, recurrent, tcn,
transformer, ...), each holding its config dataclass, its nn.Module, its model class (which
registers itself) and its fast-test settings. The registry imports every module of this package
when a torch model is first asked for, so a new architecture is one new file here; nothing in
this file imports torch, so the tabular models and the CLI load without it."""
