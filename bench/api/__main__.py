"""``python -m bench.api``."""

import sys

from bench.api import main

main(sys.argv[1:])
