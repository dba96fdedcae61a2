"""The monitor policy's threshold defaults, defined once.

`config.settings` uses them as its fields' defaults and `monitoring.policy.Thresholds`
as its own, so a policy built without settings judges as a default install does.
Shares and margins are fractions (0.05 = 5 %), durations seconds, counts rows.
"""

DRIFT_SHARE_THRESHOLD = 0.5
OOD_RATE_THRESHOLD = 0.2
MIN_WINDOW_ROWS = 200
MIN_LABELLED_ROWS = 100
LIVE_PROMOTION_MARGIN = 0.05
ROLLBACK_MARGIN = 0.10
WATCH_PERIOD_S = 3600
RETRAIN_COOLDOWN_S = 1800
CHALLENGER_PATIENCE_S = 86_400
MIN_RETRAIN_LABELLED_ROWS = 100
RETRAIN_WITHOUT_LABELS = False
FALLBACK_ROLLBACK_SHARE = 0.01
FALLBACK_MIN_ROWS = 5
