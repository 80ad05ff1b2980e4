"""The benchmark: this project's training step and ``test`` path against a plain eager baseline.

``options`` (paths, norm pairs, flags) → ``worker`` (one measurement per process, using ``probes`` and
``baseline``) → ``report``; ``runner`` ties them together. Design notes: docs/bench.md.
"""
