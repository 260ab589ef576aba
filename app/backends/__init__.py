"""Backends ("inference runtimes"): one module each, listed in :mod:`app.backends.registry`."""
