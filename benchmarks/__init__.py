"""`make bench`: every speed target of issue #18, against references timed in the same run (benchmarks/run.py)."""

# First, before any benchmark imports torch: segcli sets the OpenMP spin count its users run with (segcli/__init__.py).
import segcli  # noqa: F401
