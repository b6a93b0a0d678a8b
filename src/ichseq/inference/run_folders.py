"""The run folders that ``ichseq predict`` and ``ichseq card`` are given: one run
(``results/runs/MODEL/rep-N``) or a model folder holding one run per replicate."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError
from ..training.runs import RUN_MODEL_INFO

#: A replicate's run folder in a model folder: ``rep-N``.
REPLICATE_FOLDER = re.compile(r"^rep-(\d+)$")


def find_runs(run) -> list[Path]:
    """The run folders ``run`` stands for: itself when it is one run (it holds ``model/``), else
    the complete runs of a model folder (``rep-N/`` holding ``metrics.json`` and ``model/``),
    by replicate."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"{run}: no such run folder; give a run (results/runs/MODEL/rep-N) or a model folder "
                        f"(results/runs/MODEL)")
    if (run / "model").exists() or (run / "metrics.json").exists() or REPLICATE_FOLDER.match(run.name):
        if not (run / "model" / RUN_MODEL_INFO).is_file():
            raise DataError(f"{run}: no trained model in it (model/{RUN_MODEL_INFO} is missing: the run did not "
                            f"finish); rerun its train job, e.g. snakemake {run / 'metrics.json'}")
        return [run]
    reps = sorted((p for p in run.iterdir() if p.is_dir() and REPLICATE_FOLDER.match(p.name)),
                  key=lambda p: int(REPLICATE_FOLDER.match(p.name).group(1)))
    if not reps:
        raise DataError(f"{run}: neither a run folder (with model/) nor a model folder (with rep-N/ runs); give "
                        f"results/runs/MODEL or results/runs/MODEL/rep-N")
    complete = [p for p in reps if (p / "metrics.json").is_file() and (p / "model" / RUN_MODEL_INFO).is_file()]
    if not complete:
        raise DataError(f"{run}: none of its {len(reps)} replicate folders holds a finished run (metrics.json and "
                        f"model/); run the train rule first")
    return complete
