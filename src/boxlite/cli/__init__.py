"""The ``boxlite`` command line: docker-like verbs on top of the async SDK."""
