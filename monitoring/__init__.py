"""Watch live traffic and decide what to do about it.

- ``monitoring.policy``: the decision (retrain / promote / roll back / nothing) as a pure
  function of measured figures and named thresholds. Imports nothing heavy.
- ``monitoring.drift``: Evidently data and prediction drift read into typed results, and
  live performance once labels arrive.
- ``monitoring.ood``: the out-of-distribution index (Qdrant Edge in process, or a Qdrant
  server through ``qdrant-client``) and the OOD rate of a window.

Import the submodule you need; this package imports none of them, so importing the policy
never pulls in Evidently or Qdrant.
"""
