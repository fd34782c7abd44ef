"""sealbench: a benchmark and evaluation harness for self-adapting language models (SEAL and baselines).

Data flows one way: plan -> self-edits -> inner loop -> grades -> run folder -> tables.
See docs/architecture.md for the module map.
"""
__version__ = "0.1.0"
