"""Tests of the Python job SDK and of the job examples in docs/jobs.md."""
