"""Variants as data: the one place where a config becomes the models a run pretrains, fine-tunes and reports.

Every variant is a record, in the order the tables list them (the config's):

    fixed     one per registry mask in `masks`, pretrained with that pattern
    search    one per DAM type and lambda in `dam`: the search's own model, fine-tuned with its binarized mask
              (the official protocol), named like the paper's rows (`dam_s_0.001`)
    retrain   one per search with `dam_retrain: true` (an ablation): pretrained from scratch with the searched mask

The Snakefile builds the jobs from these records, and hands them to the report (with the paths of each
variant's files) instead of names that the report would have to parse back. No torch here: the Snakefile
imports this module when it builds the DAG.
"""

from __future__ import annotations

FIXED, SEARCH, RETRAIN = "fixed", "search", "retrain"


def search_name(dam_type: str, lam: float) -> str:
    """The variant name of a DAM search (the paper's row name); two lambdas that print alike share one name,
    which sparsebert/validate.py reports as a config error."""
    return f"{dam_type}_{lam:g}"


def variant_table(config: dict) -> dict[str, dict]:
    """name -> {kind, role, mask, params, lambda, learned_from}:
    kind          the mask's family, "fixed", "dam_s" or "dam_u" (the tables' `kind` column)
    role          which rule pretrains it: "fixed", "search" or "retrain"
    mask          the registry mask, the DAM type (a search) or "learned" (a retrain)
    params        the registry mask's parameters ({} for the others)
    lambda        the L1 weight of the search (its retrain's too), None for a fixed mask
    learned_from  a retrain's search, None for the others"""
    table = {name: _record(FIXED, FIXED, name, params or {}, None) for name, params in config.get("masks", {}).items()}
    searches = [(dam_type, lam) for dam_type, lams in config.get("dam", {}).items() for lam in lams]
    for dam_type, lam in searches:
        name = search_name(dam_type, lam)
        table[name] = _record(dam_type, SEARCH, dam_type, {}, lam)
    if config.get("dam_retrain", False):
        for dam_type, lam in searches:
            search = search_name(dam_type, lam)
            table[f"{search}_retrain"] = _record(dam_type, RETRAIN, "learned", {}, lam, learned_from=search)
    return table


def _record(kind: str, role: str, mask: str, params: dict, lam: float | None, learned_from: str | None = None) -> dict:
    return {"kind": kind, "role": role, "mask": mask, "params": params, "lambda": lam, "learned_from": learned_from}


def named(table: dict[str, dict], role: str) -> list[str]:
    """The names of the variants with `role`, in table order."""
    return [name for name, record in table.items() if record["role"] == role]


def resource_name(rule: str, variant: str, table: dict[str, dict]) -> str:
    """The `resources.<rule>.per_variant` key a variant's job reads: pretrain_learned's entries name the DAM search
    whose mask the job retrains with (one retraining per search: `dam_s_0.001`, not `dam_s_0.001_retrain`);
    every other rule's, the variant itself. Read by workflow/rules/common.smk and checked by sparsebert/validate.py."""
    return (table[variant]["learned_from"] or variant) if rule == "pretrain_learned" else variant
