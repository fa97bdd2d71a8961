"""Acting on failures: strategies plan steps as data, the selector decides, the executor runs."""
