"""Small helpers every layer may use: durations, timestamps, supervised tasks, process identity."""
