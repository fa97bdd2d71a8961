"""The local platform: Phoenix supervises services as its own child processes."""
