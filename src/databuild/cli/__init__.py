"""The ``databuild`` command line: argument parsing and output only (see ``main``)."""
