"""Sweeps: the launcher's settings, specs and random search, jobs, and the launcher that ties them together
(the sweep folder's format is `folders/sweepfolder.py`'s)."""
