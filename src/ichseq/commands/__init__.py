"""What each ``ichseq`` subcommand does, one module per command or group of commands.

:mod:`ichseq.cli` builds the parser (light: ``ichseq --help`` imports none of these) and
imports the module of the command given, and only that one, when it runs
(:data:`ichseq.cli.HANDLERS`). Each module imports what it needs at its top, so a light command
such as ``ichseq profile install`` never imports torch or the statistics. A handler takes the
parsed arguments and raises :class:`ichseq.errors.IchseqError` for a one-line error (exit 1).
"""
