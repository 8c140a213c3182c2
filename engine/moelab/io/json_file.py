"""Reading a user's JSON file, with the one-line errors every command gives for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moelab.errors import MoELabError


def read_json(path: Path, error: type[MoELabError], missing: str = "no such file") -> Any:
    """The parsed JSON of `path`; `error` naming the file when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise error(f"{path}: invalid JSON ({e})") from None
