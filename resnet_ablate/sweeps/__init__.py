"""Sweeps: the launcher's settings, the sweep folder's format, specs and random search, jobs, and the
launcher that ties them together."""
