"""``ichseq profile install``: the repository's Snakemake profiles where Snakemake finds them."""

from __future__ import annotations

from ..profiles import install_profile


def install(args) -> None:
    target, done = install_profile(args.profile, args.dest, link=args.link, force=args.force, as_name=args.name)
    what = f"a link to profiles/{args.profile}" if args.link else f"a copy of profiles/{args.profile}"
    # Snakemake finds a name in its own folder; a profile installed elsewhere is given by path.
    use = target.name if args.dest is None else target
    print(f"{target}: {what}, {done}; use it with: snakemake --profile {use}")
