"""The benchmark suite (run.py is its command line)."""
