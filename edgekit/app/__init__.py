"""The app layer: what uses the verbs together — the command line (``cli``), ``search``, the
``demo``, its ``charts`` and ``workers``, and ``measure`` (timing candidates for the verbs)."""
