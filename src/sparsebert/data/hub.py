"""Which commit of a Hugging Face dataset a run reads, and reading exactly that commit.

`datasets.load_dataset(path, name)` reads whatever the repository's main branch holds when the job starts, and
says nowhere which commit that was: the corpus's 512 shard jobs of paper.yaml, started over hours, could read two
commits, and a rerun months later reads another. Its builder knows (`builder.hash`: the commit sha of a hub
repository, taken from the local cache when offline). So every hub read here goes in two steps: `resolve` asks the
builder which commit a spec names now (`revision`: a branch, tag or sha; none = main), and the load then asks for
that commit by its sha, so what is read is what is recorded. Outputs record it (the corpus's stats.json, each
fine-tuning's metrics.json: `data`), and a config pins it (`revision` in a corpus hub spec, `tasks.hub_revisions`).

A local folder or a packaged builder (json, csv, parquet, text with data_files) has no commit: it is recorded
with revision null and read as given (a task's local files are recorded by their sha256 instead: formats.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from sparsebert.io import UserError

# The builders datasets ships (read as given: no commit); its own registry adds the rest (packaged_builders)
PACKAGED = {"json", "csv", "parquet", "text", "arrow", "pandas", "imagefolder", "audiofolder", "webdataset"}
# load_dataset keywords that its builder does not take (they choose how to read, not what)
LOAD_ONLY = {"split", "num_proc", "keep_in_memory", "verification_mode", "save_infos", "streaming"}
SHA = re.compile(r"[0-9a-f]{7,40}")  # a commit, whole or abbreviated (a pin that is no branch or tag)


def packaged_builders() -> set[str]:
    """PACKAGED and whatever else this datasets release ships (xml, hdf5, ...; a private registry, so the common
    ones are listed above as well)."""
    from datasets import packaged_modules

    return PACKAGED | set(getattr(packaged_modules, "_PACKAGED_DATASETS_MODULES", ()))


def is_repository(path: str) -> bool:
    """A hub repository ("nyu-mll/glue"), not a packaged builder or a folder on this machine."""
    return path not in packaged_builders() and not Path(path).exists()


def resolve(spec: dict) -> str:
    """The commit of the hub repository `spec["path"]` that `load_dataset(**spec)` would read now."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(**{k: v for k, v in spec.items() if k not in LOAD_ONLY})
    except Exception as e:  # offline and not cached, unknown name or revision: one line for the user
        raise UserError(f"could not resolve hub dataset {spec}: {type(e).__name__}: {e}") from None
    found, wanted = builder.hash, spec.get("revision")
    # Offline, datasets reads the newest cached commit whatever revision was asked for (a pinned one cached beside
    # a newer one included): a pinned commit, whole or abbreviated, must be what resolves.
    if wanted and SHA.fullmatch(str(wanted)) and not str(found).startswith(str(wanted)):
        raise UserError(f"hub dataset {spec['path']}: revision {wanted} is pinned, but {found} is what can be read "
                        "(offline, datasets reads the newest cached commit, whatever revision is asked for): go "
                        "online, make the pinned commit the newest in the cache, or change the pin")
    return found


def pinned(spec: dict) -> tuple[dict, dict]:
    """(the spec asking for the commit it resolves to now, the record of what it reads: path, name, revision);
    a spec of local files comes back as it is, its revision null."""
    if not is_repository(spec["path"]):
        return spec, {"path": spec["path"], "name": spec.get("name"), "revision": None}
    revision = resolve(spec)
    return {**spec, "revision": revision}, {"path": spec["path"], "name": spec.get("name"), "revision": revision}


def load(spec: dict, **kwargs):
    """`datasets.load_dataset(**spec, **kwargs)` at the commit the spec resolves to now, and its record."""
    import datasets

    spec, record = pinned(spec)
    try:
        return datasets.load_dataset(**spec, **kwargs), record
    except Exception as e:  # offline, bad files: one line for the user
        raise UserError(f"could not load hub dataset {spec}: {type(e).__name__}: {e}") from None
