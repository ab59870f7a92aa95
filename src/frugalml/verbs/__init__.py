"""verbs: the public verbs, each the whole pipeline for one command (``select``, ``compress``), on top of every
room; ``run_dir`` is what they share (options, the machine, the run directory written whole)."""
