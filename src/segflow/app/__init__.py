"""The commands on top of the pipeline: the CLI, ``run``, ``check``, ``predict``, ``build-lmdb`` and ``demo``."""
