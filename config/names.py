"""The lifecycle's names, defined once: registry aliases and serving roles.

``champion`` serves, ``challenger`` gets the canary share, ``previous`` is the rollback
target. ``latest`` is never used. A prediction is answered by the ``champion`` or the
``challenger`` role; ``shadow`` marks the challenger's prediction of a record the champion
answered (logged, never returned).

They live in ``config`` (the bottom layer) so that every package says the same words:
``registry`` moves the aliases, ``bentos`` routes by role, ``predlog`` stores each row's
role, the flows and the CLI read them.
"""

from typing import Literal

Role = Literal["champion", "challenger", "shadow"]

CHAMPION: Role = "champion"
CHALLENGER: Role = "challenger"
PREVIOUS = "previous"
SHADOW: Role = "shadow"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
