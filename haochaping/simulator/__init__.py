"""A city in a box: a simulated city's senders, driving the real ingest API for the demo, drills and benchmark.

``city`` holds the city's structure (regions, halls, units, windows, staff, service items) read from a small
YAML file; ``generator`` turns it into a deterministic stream of reviews, work orders, call-backs and SMS
replies (no I/O); ``sender`` posts them, signed, to ingest at a target rate and writes the ground truth.
"""
