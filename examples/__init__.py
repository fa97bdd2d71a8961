"""Example programs shipped with Phoenix: the services it supervises in demo and tests."""
