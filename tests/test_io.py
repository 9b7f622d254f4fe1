"""sparsebert.io: --params parsing (inline JSON/YAML or a file), each bad input one UserError."""

import pytest

from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params


def test_params_keep_exponent_floats():
    assert load_params('{"lr": 2e-5, "dam_lr": 1e-3}') == {"lr": 2e-5, "dam_lr": 1e-3}
    assert load_params("lr: 0.5\nname: x") == {"lr": 0.5, "name": "x"}


def test_params_come_inline_or_from_a_file(tmp_path):
    assert load_params(None) == {} and load_params("") == {}
    for suffix in (".json", ".yaml", ".yml"):
        path = tmp_path / f"params{suffix}"
        path.write_text('{"lr": 1e-3}' if suffix == ".json" else "lr: 1.0e-3\nmodel: {hidden_size: 32}\n")
        assert load_params(str(path)) == ({"lr": 1e-3} if suffix == ".json" else
                                          {"lr": 1e-3, "model": {"hidden_size": 32}})
    # Several lines are inline YAML, even when the last value ends like a file name.
    assert load_params("lr: 0.5\nout: examples.json") == {"lr": 0.5, "out": "examples.json"}
    assert load_params('{"out": "examples.json"}') == {"out": "examples.json"}


@pytest.mark.parametrize("text, message", [
    ("missing/params.yaml", "params file not found: missing/params.yaml"),
    ("[1, 2]", "--params must be a mapping, got list"),
    ("just text", "--params must be a mapping, got str"),
    ("{a: [1, 2}", "--params is not valid JSON/YAML: while parsing a flow sequence"),
])
def test_bad_params_are_one_user_error(text, message):
    with pytest.raises(UserError) as error:
        load_params(text)
    assert str(error.value).startswith(message), str(error.value)


def test_json_outputs_are_sorted_and_indented_so_that_reruns_give_the_same_bytes(tmp_path):
    path = tmp_path / "new" / "deeper" / "metrics.json"  # folders are made on the way
    atomic_write_json(path, {"b": [1, 2], "a": {"d": 1, "c": None}})
    assert path.read_text() == '{\n  "a": {\n    "c": null,\n    "d": 1\n  },\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_an_atomic_dir_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    out = tmp_path / "a" / "model"
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "weights").write_text("2")
        raise RuntimeError("the job died")
    assert (out / "weights").read_text() == "1" and sorted(p.name for p in out.parent.iterdir()) == ["model"]
    with atomic_dir(out) as tmp:
        (tmp / "other").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["other"] and len(list(out.parent.iterdir())) == 1
