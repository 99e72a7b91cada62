"""The working tree of a checkout, copied elsewhere: shared by the mutation tools (``mutation.py`` mutates a
copy of the library; ``claim_mutations.py`` a copy of a claim)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: never copied: bytecode, and the mutation tools' own working folder
SKIPPED_PARTS = ("__pycache__",)
SKIPPED_PREFIXES = ("mutation/",)


def git_files(root: Path) -> list[str] | None:
    """The tracked and untracked, not ignored files of ``root`` (``git ls-files -co --exclude-standard``);
    None when ``root`` is not a git checkout or git is missing."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.split("\0") if f]


def stage(root: Path, dest: Path, files: Sequence[str]) -> Path:
    """Copy ``files`` (paths relative to ``root``) to the same paths under ``dest``; files deleted but still
    tracked, bytecode and the mutation folder are skipped."""
    for rel in files:
        if any(p in rel for p in SKIPPED_PARTS) or rel.startswith(SKIPPED_PREFIXES):
            continue
        src = root / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest
