"""The ``mmt-ard`` command line: a thin layer over the library."""
