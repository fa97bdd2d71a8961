"""Phoenix: an open auto-recovery service.

It watches services, notices when one fails, works out what kind of failure it
is, picks a recovery strategy, carries it out step by step, verifies the
service is healthy again, and records everything. The layers are drawn in
DESIGN.md: ``domain`` (pure types) at the bottom, then ``detection`` and
``platforms``, then ``monitoring``, ``recovery``, ``store`` and ``config``,
then ``api``, with ``runtime``/``app``/``cli`` wiring it all together.
"""

__version__ = "0.1.0"
