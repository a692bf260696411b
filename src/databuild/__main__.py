"""``python -m databuild``: the same command line as the ``databuild`` executable.

Useful where the console script is not on ``PATH`` (a venv not activated, ``pipx run``,
``python -m`` in a container's entry point). It only calls ``databuild.cli.entry.main``.
"""

from databuild.cli.entry import main

if __name__ == "__main__":
    main()
