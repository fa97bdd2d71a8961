"""The router: the data plane in front of a local service with a public port.

It runs as its own process (``python -m phoenix_server.platforms.router``), apart from
Phoenix, so that traffic keeps flowing with the last configuration while Phoenix itself
restarts or dies. Phoenix tells it which instances to send requests to over a control
socket (``control.py``/``client.py``); the request path is ``proxy.py``.
"""
