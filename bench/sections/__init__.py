"""The speed suite's sections, one module each; each runs alone with ``python -m bench.sections.NAME [--quick]``."""
