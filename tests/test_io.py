"""sparsebert.io: params parsing."""


from sparsebert.io import load_params


def test_params_keep_exponent_floats():
    assert load_params('{"lr": 2e-5, "dam_lr": 1e-3}') == {"lr": 2e-5, "dam_lr": 1e-3}
    assert load_params("lr: 0.5\nname: x") == {"lr": 0.5, "name": "x"}
