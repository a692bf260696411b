"""DataBuild: a declarative, want-driven build system for data partitions."""

__version__ = "0.1.0"
