"""Where services run: one interface (base.py), one module per platform."""
