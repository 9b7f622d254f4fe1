"""Hub reads say which commit they read, and read that commit (sparsebert/data/hub.py); local task files their
sha256 (formats.read_task); the corpus's shards agree on the commits (corpus.merge_shards)."""

import hashlib
import json
from dataclasses import replace

import datasets
import pytest

from sparsebert.data import corpus, formats, hub
from sparsebert.data.tasks import get_task, hub_features
from sparsebert.io import UserError

from _task_files import write_glue

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeBuilder:
    """What `datasets.load_dataset_builder` returns for a hub repository: `hash` is the commit it resolved."""

    def __init__(self, commit):
        self.hash = commit


@pytest.fixture
def fake_hub(monkeypatch):
    """A hub whose repositories resolve to `commit` and whose load_dataset records what it was asked for."""
    calls = {"builder": [], "load": [], "commit": SHA}
    monkeypatch.setattr(datasets, "load_dataset_builder",
                        lambda **kw: calls["builder"].append(kw) or FakeBuilder(calls["commit"]))
    monkeypatch.setattr(datasets, "load_dataset", lambda **kw: calls["load"].append(kw) or {"train": "rows"})
    return calls


def test_a_repository_is_read_at_the_commit_it_resolved_to(fake_hub):
    data, record = hub.load({"path": "nyu-mll/glue", "name": "rte", "split": "train"}, streaming=True)
    assert data == {"train": "rows"} and record == {"path": "nyu-mll/glue", "name": "rte", "revision": SHA}
    # the builder is asked what the spec names (no load-only keywords); the load asks for that commit by its sha
    assert fake_hub["builder"] == [{"path": "nyu-mll/glue", "name": "rte"}]
    assert fake_hub["load"] == [{"path": "nyu-mll/glue", "name": "rte", "split": "train", "revision": SHA,
                                 "streaming": True}]


def test_a_branch_or_tag_resolves_to_a_commit(fake_hub):
    _, record = hub.load({"path": "allenai/swag", "name": "regular", "revision": "main"})
    assert fake_hub["builder"][0]["revision"] == "main" and fake_hub["load"][0]["revision"] == SHA
    assert record["revision"] == SHA


def test_a_pinned_commit_that_cannot_be_read_is_an_error(fake_hub):
    """Offline, datasets falls back to the newest cached commit whatever revision was asked for: a pinned commit,
    whole or abbreviated, that is not what resolves stops the read; a branch or tag cannot be checked."""
    fake_hub["commit"] = "f" * 40
    for pin in (SHA, SHA[:7]):
        with pytest.raises(UserError) as error:
            hub.load({"path": "rajpurkar/squad", "revision": pin})
        assert str(error.value) == (
            f"hub dataset rajpurkar/squad: revision {pin} is pinned, but {'f' * 40} is what can be read (offline, "
            "datasets reads the newest cached commit, whatever revision is asked for): go online, make the pinned "
            "commit the newest in the cache, or change the pin")
    assert not fake_hub["load"]
    assert hub.load({"path": "rajpurkar/squad", "revision": "v1.0"})[1]["revision"] == "f" * 40  # a tag
    fake_hub["commit"] = SHA
    assert hub.load({"path": "rajpurkar/squad", "revision": SHA})[1]["revision"] == SHA
    assert hub.load({"path": "rajpurkar/squad", "revision": SHA[:7]})[1]["revision"] == SHA


def test_packaged_builders_are_read_as_given_whatever_datasets_ships(fake_hub, tmp_path):
    """The builders datasets ships have no commit (xml and hdf5 are in its registry, not in the common list);
    a name with an owner is a repository, and so is one that is no folder here."""
    assert {"json", "csv", "parquet", "xml", "hdf5"} <= hub.packaged_builders()
    assert not hub.is_repository("xml") and not hub.is_repository(str(tmp_path))
    assert hub.is_repository("nyu-mll/glue")
    assert hub.load({"path": "xml", "data_files": "a.xml"})[1] == {"path": "xml", "name": None, "revision": None}
    assert not fake_hub["builder"]  # nothing resolved


def test_packaged_builders_without_datasets_registry_are_the_common_ones(monkeypatch):
    """The registry is a private name of datasets: a release without it leaves the list written here."""
    from datasets import packaged_modules

    monkeypatch.delattr(packaged_modules, "_PACKAGED_DATASETS_MODULES")
    assert hub.packaged_builders() == hub.PACKAGED


def test_an_unknown_repository_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="could not resolve hub dataset .*nobody-here/no-such-dataset"):
        hub.resolve({"path": "nobody-here/no-such-dataset"})


def test_what_fails_to_resolve_or_load_is_one_line_naming_the_dataset_and_the_error(fake_hub, monkeypatch):
    def unreachable(**kw):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset_builder", unreachable)
    with pytest.raises(UserError, match="could not resolve hub dataset .*glue.*: ConnectionError: Couldn't reach"):
        hub.load({"path": "nyu-mll/glue", "name": "rte"})

    def bad_files(**kw):
        raise ValueError("not a parquet file")

    monkeypatch.setattr(datasets, "load_dataset", bad_files)
    with pytest.raises(UserError, match="could not load hub dataset .*'json'.*: ValueError: not a parquet file"):
        hub.load({"path": "json", "data_files": "rows.parquet"})


def test_local_files_are_read_as_given_with_no_revision(tmp_path, monkeypatch):
    """A packaged builder's hash is a digest of its code, not of the files: no commit to record or pin."""
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda **kw: pytest.fail("no commit to resolve"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a"}\n{"text": "b"}\n')
    spec = {"path": "json", "data_files": str(rows), "split": "train"}
    data, record = hub.load(spec)
    assert data["text"] == ["a", "b"] and record == {"path": "json", "name": None, "revision": None}
    folder = {"path": str(tmp_path), "name": "sentences", "split": "train"}
    assert hub.pinned(folder) == (folder, {"path": str(tmp_path), "name": "sentences", "revision": None})


def test_a_hub_task_goes_through_datasets_and_keeps_the_hub_features(tmp_path, monkeypatch):
    """load_task's hub branch through the real datasets library: a folder in the hub's layout (parquet per
    split, the hub's features) stands in for nyu-mll/glue."""
    spec = get_task("rte")
    folder = tmp_path / "glue_rte"
    folder.mkdir()
    rows = {"sentence1": ["A man sleeps.", "It rains."], "sentence2": ["A man is awake.", "It is wet."],
            "label": [1, 0], "idx": [0, 1]}
    for split in ("train", "validation", "test"):
        datasets.Dataset.from_dict(rows, features=hub_features(spec)).to_parquet(folder / f"{split}.parquet")
    monkeypatch.setattr(formats, "get_task", lambda name: replace(spec, hub_path=str(folder), hub_config=None))
    data, record = formats.read_task("rte", {"hub": True})
    assert data["validation"]["sentence2"] == rows["sentence2"] and data["train"].features == hub_features(spec)
    assert record == {"path": str(folder), "name": None, "revision": None}  # a folder has no commit


def test_a_hub_task_passes_the_configured_revision(fake_hub, monkeypatch):
    spec = get_task("mrpc")
    table = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [1], "idx": [0]},
                                       features=hub_features(spec))
    monkeypatch.setattr(datasets, "load_dataset", lambda **kw: fake_hub["load"].append(kw) or
                        {"train": table, "validation": table, "test": table})
    _, record = formats.read_task("mrpc", {"hub": True, "revision": "v1.0"})
    assert fake_hub["builder"] == [{"path": "nyu-mll/glue", "name": "mrpc", "revision": "v1.0"}]
    assert fake_hub["load"][0]["revision"] == SHA and record["revision"] == SHA


def test_local_task_files_are_recorded_by_their_sha256(tmp_path):
    glue = write_glue(tmp_path)
    data, record = formats.read_task("rte", {"path": str(glue / "RTE")})
    expected = {name: hashlib.sha256((glue / "RTE" / name).read_bytes()).hexdigest()
                for name in ("train.tsv", "dev.tsv")}
    assert record == {"path": str(glue / "RTE"), "sha256": expected} and len(data["train"])


def _hub_corpus(tmp_path, shards=2):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"Row {i} says hello. It ends here."}) + "\n" for i in range(8)))
    return {"source": "hub", "num_proc": 1, "shards": shards,
            "hub": {"datasets": [{"path": "json", "data_files": str(rows), "text_column": "text", "group_rows": 2}]}}


def test_the_corpus_records_what_each_hub_dataset_was_read_at(tmp_path):
    params = _hub_corpus(tmp_path)
    stats = corpus.build_corpus(params, tmp_path / "corpus")
    assert stats["hub"] == [{"path": "json", "name": None, "revision": None}]
    assert json.loads((tmp_path / "corpus" / "stats.json").read_text())["hub"] == stats["hub"]


def test_the_corpus_pins_each_repository_before_it_reads(fake_hub):
    params = {"source": "hub", "hub": {"streaming": True, "datasets": [
        {"path": "wikimedia/wikipedia", "name": "20231101.en", "clean": "wikipedia"},
        {"path": "bookcorpus/bookcorpus", "group_rows": 256, "text_column": "text", "split": "train"}]}}
    pinned, origins = corpus.pin_hub(params)
    assert pinned["hub"]["datasets"] == [{"path": "wikimedia/wikipedia", "name": "20231101.en", "clean": "wikipedia",
                                          "revision": SHA},
                                         {"path": "bookcorpus/bookcorpus", "group_rows": 256, "text_column": "text",
                                          "split": "train", "revision": SHA}]
    # what is read, not how it is grouped or cleaned
    assert fake_hub["builder"] == [{"path": "wikimedia/wikipedia", "name": "20231101.en"},
                                   {"path": "bookcorpus/bookcorpus"}]
    assert origins == [{"path": "wikimedia/wikipedia", "name": "20231101.en", "revision": SHA},
                       {"path": "bookcorpus/bookcorpus", "name": None, "revision": SHA}]
    assert pinned["hub"]["streaming"] and params["hub"]["datasets"][0] == {"path": "wikimedia/wikipedia",
                                                                           "name": "20231101.en",
                                                                           "clean": "wikipedia"}  # not modified


def test_shards_that_read_different_commits_do_not_merge(tmp_path):
    params = _hub_corpus(tmp_path)
    out = tmp_path / "corpus"
    for index in range(2):
        corpus.build_shard(params, out, index)
    shard = out / "shard-00001.json"
    stats = json.loads(shard.read_text())
    stats["hub"][0]["revision"] = SHA  # as if a commit landed between the two jobs
    shard.write_text(json.dumps(stats))
    with pytest.raises(UserError, match=f"shard-00001.json read the hub datasets at .*{SHA}.*pin `revision`"):
        corpus.merge_shards(params, out)
    assert not (out / "stats.json").exists()


def test_a_text_corpus_records_no_hub(tmp_path):
    (tmp_path / "a.txt").write_text("One sentence here. Another one.\n\nA second document. It has two.\n")
    stats = corpus.build_corpus({"source": "text_files", "num_proc": 1,
                                 "text_files": {"glob": str(tmp_path / "*.txt")}}, tmp_path / "corpus")
    assert "hub" not in stats and "hub" not in json.loads((tmp_path / "corpus" / "shard-00000.json").read_text())

