"""pipeline: a release orchestrator for container images."""

import os as _os

__version__ = "0.1.0"

# pydantic looks for plugins in every installed distribution's entry points the first time it builds a
# validator (20 ms); the config models use none. A user who sets the variable keeps their choice.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
