"""Benchmarks of the planned service (``llmtune bench`` / ``llmtune verify``), pure: the
llama-bench command line (argv), its results and the run store (results), what can change speed
(snapshot), the comparison with a baseline (compare) and its chart (plot)."""
