"""Tests against a real local Ray cluster (head plus a worker node) in a loopback-only network namespace."""
