"""The server compiles its feature kernels with the bundle's own example before it can say ready
(issue 21 §1): the first scored request pays no JIT, and a reloaded bundle is warmed before the swap.
Loading a bundle scores its verified example (issue 21 §3), so the kernels are compiled by then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving import train

from quant_cli import stages

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import sys
from quant_cli.serve.app import create_app
from quant_cli.serve.bundle import load
loaded = load(sys.argv[1])
# loading scores the bundle's own example (issue 21 §3: a model that cannot score it is refused), which
# compiles the kernels before create_app; create_app's warm-up scores that verified example again
print("quant_cli.features._compiled" in sys.modules)
create_app(loaded)
from quant_cli.features import _compiled
print(bool(_compiled.moment.signatures) and bool(_compiled.ewm.signatures))
"""


def test_create_app_compiles_the_kernels_with_the_bundle_example(tmp_path: Path) -> None:
    trained = train(tmp_path)
    bundle = stages.bundle_existing(trained.run, trained.data_dir).bundle
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(bundle)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
