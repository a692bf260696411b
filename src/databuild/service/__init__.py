"""The graph service: the HTTP API over the controller, and the read views it serves."""
