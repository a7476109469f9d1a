"""Where the ranks of a data-parallel fit are and what each does: the pure, torch-free part of
quant_cli.models.torch.distributed and .launch (unit-tested without a process group)."""

from __future__ import annotations

import os

from quant_cli.errors import QFactoryError, RecipeError


class RankFailed(QFactoryError):
    """A data-parallel rank died or failed: not the user's input (exit 1)."""

    exit_code = 1


TIMEOUT_ENV = "QFACTORY_DIST_TIMEOUT"
DEVICE_ENV = "QFACTORY_DIST_DEVICE"  # the training device kind a local worker uses ("cpu" or "cuda")
DEFAULT_TIMEOUT_S = 1800


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise QFactoryError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; set e.g. {TIMEOUT_ENV}=600") from None
    if value <= 0:
        raise QFactoryError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


def env_ranks(environ: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the torchrun environment, or None outside one."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise QFactoryError(
            f"RANK={env.get('RANK')!r} and WORLD_SIZE={env.get('WORLD_SIZE')!r} must be integers "
            "(the torchrun environment)"
        ) from None
    if not 0 <= rank < size:
        raise QFactoryError(f"RANK={rank} is outside WORLD_SIZE={size}; ranks are numbered 0..WORLD_SIZE-1")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if size > 1 and missing:
        raise QFactoryError(
            f"WORLD_SIZE={size} but {' and '.join(missing)} not set; "
            "set them to rank 0's host and a free "
            "port (torchrun does this)"
        )
    return rank, size, local


def share_counts(n: int, size: int) -> list[int]:
    """Rows of each rank's share of an n-row batch (torch.tensor_split's: the first n % size get one more)."""
    q, r = divmod(n, size)
    return [q + (i < r) for i in range(size)]


def torchrun_rank() -> int | None:
    """This process's RANK under torchrun (WORLD_SIZE > 1), else None."""
    ranks = env_ranks()
    return None if ranks is None or ranks[1] <= 1 else ranks[0]


def check_nproc(nproc: int, device: str, cuda_count: int) -> None:
    """Refuse a group this machine cannot run, in one line (exit 2)."""
    if nproc <= 1:
        return
    if device.startswith("cuda"):
        if ":" in device:
            raise RecipeError(
                f"--nproc {nproc} uses one GPU per process, cuda:0..cuda:{nproc - 1}; "
                "pass --device cuda, "
                f"not {device!r} (set CUDA_VISIBLE_DEVICES to choose the GPUs)"
            )
        if nproc > cuda_count:
            raise RecipeError(
                f"--nproc {nproc} needs {nproc} GPUs (one per process) but {cuda_count} are visible; "
                f"use --nproc {max(cuda_count, 1)} or --device cpu"
            )
    elif device != "cpu":
        raise RecipeError(
            f"--nproc {nproc} trains on cpu (gloo) or cuda (nccl), not {device!r}; pass --device cpu or cuda"
        )
