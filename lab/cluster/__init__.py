"""Campaigns across lab hosts on Dask distributed (the optional `pmemlab[cluster]` extra).

client: the campaign's executor (submit, wait, results; the store stays the controller's).
task: what runs on a worker (one attempt, pure). worker: `pmemlab worker`. local: `pmemlab cluster`.
Nothing outside this package imports it at module level: a single-host campaign never loads Dask.
"""
