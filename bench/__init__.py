"""``make bench``: cold start, latency under load, ingestion and memory, measured against the
framework floor (a bare functions-framework function) and the database floor (pgbench, plain
COPY), and per-function Knative autoscaling values derived from the measurements.

Run ``python -m bench.run --help``. Results go to ``bench/results/`` and ``bench/RESULTS.md``.
"""
