"""Operator-facing input formats: environment settings, the service file, playbook documents."""
