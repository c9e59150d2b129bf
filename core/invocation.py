"""The commands rlgen prints for the user to run next, spelled the way this process was started.

After the README's install the virtual environment is usually not activated, so a bare `rlgen` or
`tensorboard` is not on PATH: the printed command must name what works from the user's shell.
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def rlgen_command() -> str:
    """`rlgen` when that resolves to the script this process runs, else that script's path as typed, else
    `python -m core.cli` (an API call or `python -m` start)."""
    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(script).name in ("rlgen", "rlgen.exe") and Path(script).is_file():
        on_path = shutil.which("rlgen")
        if on_path and Path(on_path).resolve() == Path(script).resolve():
            return "rlgen"
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m core.cli"


def tensorboard_command() -> str:
    """`tensorboard` when it is on PATH, else the script beside this Python, else `python -m tensorboard.main`."""
    if shutil.which("tensorboard"):
        return "tensorboard"
    beside = Path(sys.executable).parent / "tensorboard"
    if beside.is_file():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m tensorboard.main"
