"""Turning signals into knowledge: health thresholds, uptime, failure classification."""
