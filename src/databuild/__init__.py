"""DataBuild: a declarative, want-driven build system for data partitions.

``__version__`` is the one place the version is written: the package metadata takes it from
here (``[tool.setuptools.dynamic]`` in pyproject.toml), and the CLI, the service and alerts
import it.
"""

__version__ = "0.1.0"
