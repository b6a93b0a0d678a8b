"""``ichseq predict``: trained runs applied to new scans."""

from __future__ import annotations

import torch

from ..inference.predict import predict


def run(args) -> None:
    torch.set_num_threads(max(1, args.threads))
    # Each scan's "written DIR" line comes as it is written; scans that could not be scored are
    # listed at the end (exit status 1) after the others were scored.
    predict(args.run, args.scans, out=args.out, series=args.series, device=args.device,
            allow_partial=args.allow_partial, log=lambda msg: print(msg, flush=True), reformat=not args.no_reformat,
            strict=args.strict)
