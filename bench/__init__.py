"""Benchmarks (``make bench``): each module's ``main()`` prints its figures and, where the
issue names a peer, the ratio measured in the same run. Not tests: nothing here asserts."""
