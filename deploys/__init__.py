"""llmtune's deploys, each usable as ``pyinfra INVENTORY deploys/NAME.py`` and importable as a
``@deploy`` function (``from llmtune.deploys.power import power``) in a user's own deploy."""
