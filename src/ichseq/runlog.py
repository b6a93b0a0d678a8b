"""Logging for rule scripts: one log file per job, one clean line on failure.

Rule scripts call ``run_step(log_path, fn)``. Messages go to the job's log file (and to
stderr, which Snakemake shows); a message starting with ``WARNING: `` is logged at level
WARNING. An :class:`~ichseq.errors.IchseqError` ends the job with its
one-line message and exit status 1 instead of a traceback; any other exception is a bug
and keeps its traceback in the log.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .errors import IchseqError

LOGGER_NAME = "ichseq"
#: Package code logs through a plain ``log(message)`` callable; this prefix marks a warning.
WARNING_PREFIX = "WARNING: "


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _configure(log_path: str | Path | None) -> logging.Logger:
    logger = get_logger()
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def run_step(log_path: str | Path | None, fn: Callable[[Callable[[str], None]], object], name: str = "step") -> object:
    """Run ``fn(log)`` where ``log`` writes one INFO (or WARNING) line; exit 1 with one line on IchseqError."""
    logger = _configure(log_path)

    def log(message: str) -> None:
        if message.startswith(WARNING_PREFIX):
            logger.warning(message.removeprefix(WARNING_PREFIX))
        else:
            logger.info(message)

    t0 = time.perf_counter()
    try:
        result = fn(log)
    except IchseqError as exc:
        logger.error(f"{name} failed: {exc}")
        sys.exit(1)
    except Exception:
        logger.error(f"{name} failed with an unexpected error (a bug; please report it):\n{traceback.format_exc()}")
        raise
    logger.info(f"{name} done in {time.perf_counter() - t0:.1f} s")
    return result
