"""Atomic file writes (a crash mid-write never leaves a truncated file at the final path), and
the reader of the append-only JSON-lines files."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`. The
    file gets the permissions any program's would under the user's umask (mkstemp's are 0600:
    colleagues on a shared folder could not read the results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # nothing half-written is left, under any name
        if isinstance(e, OSError):  # a full disk, a quota, a file size limit, an I/O error: name the file
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (none when it does not exist). A last line that is not
    JSON is skipped: a running search may be writing it; a bad line before it raises ValueError."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return records
