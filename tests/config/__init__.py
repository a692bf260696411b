"""Tests of graph configuration (databuild.toml), its docs and the calendar example."""
