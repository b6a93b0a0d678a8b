"""The sharded slice cache's shard names: the brain_window_shard rule's wildcard values.

Apart from :mod:`ichseq.data.shards` (which reads scans: pydicom, nibabel, scipy) because the
Snakefile names every shard's folder on each invocation, and under Slurm in every job.
"""

from __future__ import annotations


def shard_name(shard: int, shards: int) -> str:
    """``shard``'s name (000, 001, ...; more digits past 1,000 shards): the rule's wildcard."""
    return f"{shard:0{max(3, len(str(shards - 1)))}d}"
