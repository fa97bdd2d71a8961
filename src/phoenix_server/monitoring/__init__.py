"""Watching services: probes, their schedule, and fast verification after a recovery."""
