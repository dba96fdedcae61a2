"""The lifecycle's alias names, defined once (`registry` re-exports them).

``champion`` serves, ``challenger`` gets the canary share, ``previous`` is the rollback
target. ``latest`` is never used.
"""

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
