"""Which registered models refit bit for bit on this machine: `qfactory audit` on a tiny run of each.

The audit's training checks compare a refit on rewritten future bars with a control refit, and
report whether the control reproduces the run's own predictions.parquet; this prints, per model,
the verdict and the largest difference between the control refit and the run (0.0: bit for bit).

    PYTHONPATH=. python benchmarks/audit_reproducibility.py [MODEL ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import TORCH_FAST, params_for  # noqa: E402
from serving import BASE, store  # noqa: E402

from quant_cli import stages  # noqa: E402
from quant_cli.audit import audit_run  # noqa: E402
from quant_cli.models.registry import all_models  # noqa: E402
from quant_cli.recipe import load_recipe  # noqa: E402

FAST = {
    "lightgbm": {"n_estimators": 20, "min_data_in_leaf": 20},
    "catboost": {"iterations": 40, "depth": 4},
    "xgboost": {"n_estimators": 40, "max_depth": 3},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 5},
    "extra_trees": {"n_estimators": 20, "min_samples_leaf": 5},
    **TORCH_FAST,
}
SEQUENCE = [
    "features.sets=[]",
    'features.include=["ret_5", "ret_10"]',
    "train.epochs=2",
    "train.batch_size=64",
    "train.patience=0",
]


def audit_model(name: str, data_dir: Path, runs_dir: Path) -> str:
    cls = all_models()[name]
    task = "regression" if "regression" in getattr(cls, "tasks", ("regression",)) else "classification"
    extra = [
        *(SEQUENCE if getattr(cls, "sequence", False) else []),
        *(['model.task="classification"', 'label.kind="direction"'] if task == "classification" else []),
    ]
    recipe = load_recipe(None, [*BASE, f'model.name="{name}"', *extra])
    recipe["model"]["params"].update(params_for(name, task, FAST))
    run = stages.train_new(recipe, data_dir, runs_dir).run
    started = time.perf_counter()
    report = audit_run(run, data_dir, permutations=0).report
    repro = report["training"]["reproduction"]
    return (
        f"{name:14s} {task:14s} {report['verdict']:4s} {report['checks']['passed']}/{report['checks']['total']} "
        f"reproduced={repro['reproduced']} max_diff={repro['max_abs_difference']:.3g} "
        f"audit {time.perf_counter() - started:.1f}s"
    )


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        data_dir = store(Path(root))  # 4 symbols x 600 daily bars (tests/serving.py)
        for name in names or sorted(all_models()):
            print(audit_model(name, data_dir, Path(root) / "runs"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
