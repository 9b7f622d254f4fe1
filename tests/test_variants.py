"""The variant table (sparsebert/variants.py): what the rules, validate.py and the report read about each
variant, written out by hand for a small config."""

from __future__ import annotations

from sparsebert.variants import named, resource_name, variant_table


def test_variant_table_of_a_small_config():
    config = {"masks": {"dense": {}, "longformer": {"window": 2}}, "dam": {"dam_s": [1e-3, 0.1], "dam_u": [1e-4]},
              "dam_retrain": True}  # fmt: skip
    fixed = {"role": "fixed", "kind": "fixed", "lambda": None, "learned_from": None}
    assert variant_table(config) == {
        "dense": {**fixed, "mask": "dense", "params": {}},
        "longformer": {**fixed, "mask": "longformer", "params": {"window": 2}},
        "dam_s_0.001": {"kind": "dam_s", "role": "search", "mask": "dam_s", "params": {}, "lambda": 1e-3, "learned_from": None},
        "dam_s_0.1": {"kind": "dam_s", "role": "search", "mask": "dam_s", "params": {}, "lambda": 0.1, "learned_from": None},
        "dam_u_0.0001": {"kind": "dam_u", "role": "search", "mask": "dam_u", "params": {}, "lambda": 1e-4, "learned_from": None},
        "dam_s_0.001_retrain": {"kind": "dam_s", "role": "retrain", "mask": "learned", "params": {}, "lambda": 1e-3,
                                "learned_from": "dam_s_0.001"},
        "dam_s_0.1_retrain": {"kind": "dam_s", "role": "retrain", "mask": "learned", "params": {}, "lambda": 0.1,
                              "learned_from": "dam_s_0.1"},
        "dam_u_0.0001_retrain": {"kind": "dam_u", "role": "retrain", "mask": "learned", "params": {}, "lambda": 1e-4,
                                 "learned_from": "dam_u_0.0001"},
    }  # fmt: skip
    # The order is the tables' row order: fixed masks, searches, retrainings, each as configured.
    assert list(variant_table(config)) == ["dense", "longformer", "dam_s_0.001", "dam_s_0.1", "dam_u_0.0001",
                                           "dam_s_0.001_retrain", "dam_s_0.1_retrain", "dam_u_0.0001_retrain"]


def test_no_retrain_without_dam_retrain_and_roles_select_names():
    table = variant_table({"masks": {"star": {}}, "dam": {"dam_u": [0.01]}})
    assert list(table) == ["star", "dam_u_0.01"]
    assert named(table, "fixed") == ["star"] and named(table, "search") == ["dam_u_0.01"] and named(table, "retrain") == []


def test_a_config_without_fixed_masks_has_only_searches():
    """`masks` may be absent (a DAM-only config): the table is the searches, no error."""
    table = variant_table({"dam": {"dam_s": [0.1]}})
    assert table == {"dam_s_0.1": {"kind": "dam_s", "role": "search", "mask": "dam_s", "params": {}, "lambda": 0.1,
                                   "learned_from": None}}  # fmt: skip


def test_a_retraining_reads_the_resources_named_by_its_search_every_other_job_its_own():
    table = variant_table({"masks": {"dense": {}}, "dam": {"dam_s": [1e-3]}, "dam_retrain": True})
    assert resource_name("pretrain_learned", "dam_s_0.001_retrain", table) == "dam_s_0.001"
    # fine-tuning the retrained model: its own entry; the search and the fixed masks: theirs
    assert [resource_name(rule, variant, table) for rule, variant in [
        ("finetune", "dam_s_0.001_retrain"), ("dam_search", "dam_s_0.001"), ("finetune", "dam_s_0.001"),
        ("pretrain", "dense"), ("finetune", "dense")]] == [
        "dam_s_0.001_retrain", "dam_s_0.001", "dam_s_0.001", "dense", "dense"]
