"""Watch live traffic and decide what to do about it.

- ``monitoring.figures``: a check's figures from the window it read (drift, OOD, live
  metrics per version), as one pure function the monitor flow calls.
- ``monitoring.policy``: the decision (retrain / promote / roll back / nothing) as a pure
  function of measured figures and named thresholds. Imports nothing heavy.
- ``monitoring.report``: a check's record, its Markdown for people, what it judged.
- ``monitoring.drift``: Evidently data and prediction drift read into typed results, and
  live performance once labels arrive.
- ``monitoring.ood``: the out-of-distribution index (Qdrant Edge in process, or a Qdrant
  server through ``qdrant-client``) and the OOD rate of a window.
- ``monitoring.live``: bootstrap intervals of live gains; ``monitoring.workspace``: the
  Evidently workspace of checks over time.
- ``monitoring.metrics``: each task's primary metric and the relative gain (the gate's and
  the monitor's one vocabulary); ``monitoring.events``: the events the monitor emits.

Import the submodule you need; this package imports none of them, so importing the policy
never pulls in Evidently or Qdrant.
"""
