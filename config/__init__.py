"""Settings, the bottom layer: every package of driftloop may import ``config``; it
imports none of them at import time.

- ``config.serving.ServingSettings``: what the BentoML service needs (it ships in every Bento).
- ``config.settings.Settings``: the one typed settings object (inherits the serving
  fields), ``load_settings()`` reads ``DRIFTLOOP_*`` variables and the stack file.
"""
