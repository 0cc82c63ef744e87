"""The OpenAPI document; ``python -m boxlite.server.openapi [FILE]`` writes openapi/openapi.json."""

from __future__ import annotations

import json
import sys
from typing import Any

from .app import create_app


def document() -> dict[str, Any]:
    """What the server serves at ``/openapi.json``."""
    return create_app().openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
