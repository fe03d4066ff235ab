"""The only orchestrator: one module per stage, tied to the targets through the registry.

models -> quant -> exporters -> runtime -> validate is the data flow; each stage module here
runs one CLI command over those layers and returns a plain dict the CLI prints:
``zoo`` (models, train, evaluate), ``export``, ``quantize``, ``validate``, ``bench`` and
``deploy``, each with a function of the module's name (``edgegate.pipeline.export.export``).
``tasks`` holds what differs between image, gated-compression and language models,
``summary`` the human report rows.
"""
