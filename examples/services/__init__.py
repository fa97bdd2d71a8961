"""Fault-injectable services for Phoenix to supervise.

They are real processes, not mocks, so Phoenix's detection and recovery are exercised end to end:
`web` is an HTTP service with health and admin endpoints, `worker` a port-less background job.
"""
