"""Benchmarks: the portal against a bare Flask app, under the same gunicorn and load tool.

Run them all with `make bench` (or `python bench/run.py`). Nothing here is a test.
"""
