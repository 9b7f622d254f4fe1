"""sparsebert.io: --params parsing (inline JSON/YAML or a file), each bad input one UserError."""

import pytest

from sparsebert.io import UserError, load_params


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
