"""Analysis: the papers' tables as data, reading run folders into seed groups, the report's tables, figures
and sweep view."""
