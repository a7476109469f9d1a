"""`qfactory doctor`: what this machine offers qfactory, on one screen.

Python, qfactory and key library versions; the torch build (CUDA and cuDNN versions, devices with
memory, compute capability and bf16 support, MPS); CPU threads; the data and runs homes with
their free disk space; numba's compiled-kernel cache; chromium (HTML report screenshots and
browser checks); Ray (and Ray Train). `problems` lists only what the user asked for and cannot
have (a --device, --backend ray, a home that cannot be written): the command exits 2 then.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from quant_cli import __version__

LIBRARIES = (
    "polars",
    "pyarrow",
    "deltalake",
    "numpy",
    "numba",
    "torch",
    "lightgbm",
    "xgboost",
    "catboost",
    "scikit-learn",
    "optuna",
    "fastapi",
    "ray",
)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_build() -> dict[str, Any]:
    """The torch build and the accelerators it sees."""
    try:
        import torch
    except ImportError:
        return {"installed": False}
    info: dict[str, Any] = {
        "installed": True,
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "threads": torch.get_num_threads(),
    }
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        info["devices"].append(
            {
                "index": index,
                "name": props.name,
                "memory_gb": round(props.total_memory / 1024**3, 1),
                "capability": f"{props.major}.{props.minor}",
                "bf16": bf16,
            }
        )
    return info


def home(path: Path) -> dict[str, Any]:
    """A home folder: whether it exists, can be written, and the free space of its disk."""
    path = Path(path).resolve()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the nearest existing folder holds the disk the home would be on
    free = shutil.disk_usage(probe).free if probe.exists() else None
    return {
        "path": str(path),
        "exists": path.is_dir(),
        "writable": os.access(probe, os.W_OK),
        "free_gb": None if free is None else round(free / 1024**3, 1),
    }


def kernel_cache() -> dict[str, Any]:
    """numba's on-disk cache of the compiled feature kernels (quant_cli/features/_compiled.py, cache=True):
    NUMBA_CACHE_DIR when set, else the __pycache__ beside that file; how many kernels it holds."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    folder = Path(configured) if configured else Path(__file__).resolve().parent / "features" / "__pycache__"
    probe = folder if folder.exists() else folder.parent
    cached = len(list(folder.rglob("*.nbi"))) if folder.is_dir() else 0  # numba's index file per kernel
    return {
        "numba": _version("numba"),
        "cache_dir": str(folder),
        "from_env": bool(configured),
        "writable": os.access(probe, os.W_OK),
        "kernels": cached,
    }


def ray_status() -> dict[str, Any]:
    """Ray's version and whether Ray Train is installed (found, not imported: importing it takes seconds)."""
    import importlib.util

    version = _version("ray")
    train = False
    if version is not None:
        try:
            train = importlib.util.find_spec("ray.train") is not None
        except (ImportError, ValueError):
            train = False
    return {"version": version, "train": train, "address": os.environ.get("RAY_ADDRESS")}


def diagnose(data_dir: Path, runs_dir: Path, device: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """Everything `qfactory doctor` shows; `problems` names what was asked for and cannot work."""
    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable, "platform": platform.platform()},
        "qfactory": __version__,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "torch": torch_build(),
        "cpu": {
            "cores": os.cpu_count(),
            "usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        },
        "homes": {"data": home(data_dir), "runs": home(runs_dir)},
        "kernels": kernel_cache(),
        "chromium": shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"),
        "ray": ray_status(),
    }
    report["problems"] = problems(report, device, backend)
    return report


def problems(report: dict[str, Any], device: str | None, backend: str | None) -> list[str]:
    found = []
    if device is not None:
        from quant_cli.errors import QFactoryError
        from quant_cli.models.device import resolve_device

        try:
            resolve_device(device, strict=True)
        except QFactoryError as exc:
            found.append(str(exc))
    if backend == "ray" and report["ray"]["version"] is None:
        found.append("--backend ray needs Ray: install it with `pip install 'qfactory[ray]'`")
    for label, folder in report["homes"].items():
        if not folder["writable"]:
            found.append(
                f"the {label} home {folder['path']} cannot be written; pass --{label}-dir or fix its permissions"
            )
    return found


def lines(report: dict[str, Any]) -> list[str]:
    """The report as one screen of text."""
    t, cpu = report["torch"], report["cpu"]
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items() if v is not None)
    missing = ", ".join(k for k, v in report["libraries"].items() if v is None)
    out = [
        f"qfactory {report['qfactory']} on Python {report['python']['version']} ({report['python']['platform']})",
        f"libraries: {libs}" + (f"; not installed: {missing}" if missing else ""),
    ]
    if t["installed"]:
        build = f"CUDA {t['cuda']}, cuDNN {t['cudnn']}" if t["cuda"] else "CPU-only build"
        out.append(
            f"torch {t['version']}: {build}; CUDA available: {'yes' if t['cuda_available'] else 'no'}; "
            f"MPS: {'yes' if t['mps'] else 'no'}; threads {t['threads']}"
        )
        for d in t["devices"]:
            out.append(
                f"  cuda:{d['index']} {d['name']}, {d['memory_gb']} GiB, compute {d['capability']}, "
                f"bf16 {'yes' if d['bf16'] else 'no (fp16 + loss scaling)'}"
            )
    else:
        out.append("torch: not installed (torch models unavailable)")
    out.append(f"cpu: {cpu['cores']} cores, {cpu['usable']} usable by this process")
    for label, h in report["homes"].items():
        state = "exists" if h["exists"] else "not created yet"
        out.append(
            f"{label} home: {h['path']} ({state}, {'writable' if h['writable'] else 'NOT writable'}, "
            f"{h['free_gb']} GiB free)"
        )
    k = report["kernels"]
    where = "NUMBA_CACHE_DIR" if k["from_env"] else "beside the kernels"
    out.append(
        f"compiled kernels: numba {k['numba'] or 'not installed'}, cache {k['cache_dir']} ({where}; "
        f"{k['kernels']} cached, {'writable' if k['writable'] else 'NOT writable: kernels recompile each run'})"
    )
    out.append(f"chromium: {report['chromium'] or 'not found (report screenshots and browser checks unavailable)'}")
    r = report["ray"]
    train = f", Ray Train {'installed' if r['train'] else 'not installed'}" if r["version"] else ""
    address = f", RAY_ADDRESS={r['address']}" if r["address"] else ""
    out.append(f"ray: {r['version'] or 'not installed'}{train}{address}")
    out.extend(f"problem: {p}" for p in report["problems"])
    return out
