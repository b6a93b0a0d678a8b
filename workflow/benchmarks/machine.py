"""What machine a benchmark ran on, for the figures docs/benchmarks.md quotes."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU cores and model, the GPU if torch sees one, and the torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}"
