"""Small I/O contracts shared by every subcommand: user errors, params parsing, atomic writes, the package's
source hash.

Atomic writes matter here: Snakemake (and a user) must never mistake a half-written file from a killed
job for a finished output, so every output is written to a temporary name, fsynced, then renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import yaml


class UserError(Exception):
    """A problem with the user's input (file, key, value): printed as one line, no traceback."""


def load_params(text: str | None) -> dict:
    """Parse `--params`: a JSON/YAML mapping given inline, or a path to a .json/.yaml/.yml file (one line
    ending so: an inline mapping on one line ends with `}`, and one over several lines is never a path)."""
    if not text:
        return {}
    path = Path(text)
    if "\n" not in text and path.suffix in {".json", ".yaml", ".yml"}:
        if not path.is_file():
            raise UserError(f"params file not found: {path}")
        text = path.read_text()
    try:
        # JSON first: YAML 1.1 reads JSON's `1e-05` as a string, not a float.
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"--params is not valid JSON/YAML: {e}") from None
    if not isinstance(value, dict):
        raise UserError(f"--params must be a mapping, got {type(value).__name__}")
    return value


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary sibling directory; on success it replaces `path` whole, on error it is removed.

    Usage: `with atomic_dir(out) as tmp: model.save_pretrained(tmp)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


PACKAGE = Path(__file__).parent


def hash_package_source(digest, extra=()) -> None:
    """Add this package's Python source to hashlib `digest`: each file's path in the package, then its bytes, in
    path order; `extra`: other files of the package (validate's cache key adds the schema)."""
    for path in sorted([*PACKAGE.rglob("*.py"), *extra]):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
