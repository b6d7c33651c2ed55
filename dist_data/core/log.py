"""Logging with a rank prefix: INFO from local rank 0 only, warnings and errors from every rank."""

from __future__ import annotations

import logging
import os
import sys

import tqdm

logger = logging.getLogger("dist_data")


def setup_logging(rank: int, local_rank: int, world_size: int) -> None:
    prefix = f"[rank {rank}/{world_size}] " if world_size > 1 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO if local_rank == 0 else logging.WARNING)
    # Quiet the libraries' own chatter; our stage logs say what happened.
    for name in ("sentence_transformers", "transformers", "datasets", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .compat import notice

    if notice():
        logger.info("%s", notice())


def progress(total: int, desc: str, enabled: bool, unit: str = "rows") -> tqdm.tqdm:
    """A progress bar on rank 0 only, with rows/s."""
    return tqdm.tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                     dynamic_ncols=True, file=sys.stderr, mininterval=1.0)


def quiet_progress() -> None:
    """``--noprogress``: no bar anywhere (ours, model loading, datasets', the hub's)."""
    os.environ["TQDM_DISABLE"] = "1"  # child processes (datasets' workers)
    init = tqdm.std.tqdm.__init__
    if not getattr(init, "_dist_data_quiet", False):  # tqdm read its environment at import: patch the class
        def quiet_init(self, *args, **kwargs):
            kwargs["disable"] = True
            init(self, *args, **kwargs)
        quiet_init._dist_data_quiet = True
        tqdm.std.tqdm.__init__ = quiet_init
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - both are dependencies
        pass
