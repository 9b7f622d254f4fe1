"""Recipes: every subcommand's --params, checked against its definition in config.schema.yaml and filled with
the defaults written there. The schema is the one place that says which keys exist, their types, ranges,
defaults and meaning; no module keeps a copy.

    recipe = recipes.fill("pretrain", load_params(args.params))  # one UserError naming every bad key

The whole config is checked against the same file (`problems(config)`, called by sparsebert.validate from the
Snakefile), so a key that no subcommand knows stops the run before any job. Types are stricter than JSON
Schema's: an integer is a Python int (not 3.0, not true) and a number is finite, because the code runs
`range(n)` and arithmetic on them.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from pathlib import Path

import yaml

from sparsebert.io import UserError

# In the package (a link to workflow/schemas/config.schema.yaml, copied into wheels): the subcommands find it
# wherever they run, the Snakefile where Snakemake workflows keep their schemas.
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
SECTIONS = ("corpus", "tokenizer", "examples", "proxy_tasks", "pretrain", "finetune", "report")


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def definition(section: str) -> dict:
    if section not in SECTIONS:
        raise ValueError(f"no recipe section {section!r}; sections: {', '.join(SECTIONS)}")
    return schema()["definitions"][section]


def _resolve(ref: str) -> dict:
    node = schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _subschema(node: dict) -> dict:
    """A schema with its local $ref merged in (the keys beside a $ref add to or override the target)."""
    return {**_subschema(_resolve(node["$ref"])), **node} if "$ref" in node else node


# ------------------------------------------------------------------------------------------ checking


def _is_int(checker, value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(checker, value) -> bool:
    return _is_int(checker, value) or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                       and math.isfinite(value))  # fmt: skip


@functools.cache
def _validator_class():
    from jsonschema import Draft202012Validator, validators

    types = Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_int, "number": _is_number})
    return validators.extend(Draft202012Validator, type_checker=types)


def strict_validator(schema: dict):
    """A JSON Schema validator of `schema` with this module's types (an integer is an int, a number finite), for
    the other JSON files the package reads (estimate's reference timings)."""
    return _validator_class()(schema)


def _key(where: str, path) -> str:
    key = where
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _types(node: dict) -> list[str]:
    """The JSON types a (resolved) schema node allows, in the schema's order: `type` is one name or a list."""
    kinds = node.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


def describe(node: dict) -> str:
    """What a value of this schema must be, in words: 'an integer in [5, 1048576]', 'one of a, b or null'."""
    node = _subschema(node)
    if "enum" in node:
        return "one of " + ", ".join(map(str, node["enum"]))
    kinds = _types(node)
    nullable = "null" in kinds
    kinds = [k for k in kinds if k != "null"]
    words = {"integer": "an integer", "number": "a finite number", "string": "a string", "boolean": "true or false",
             "array": "a list", "object": "a mapping"}
    what = " or ".join(words[k] for k in kinds) or "a value"
    low = (f"> {node['exclusiveMinimum']}" if "exclusiveMinimum" in node
           else f">= {node['minimum']}" if "minimum" in node else "")  # fmt: skip
    high = (f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node
            else f"<= {node['maximum']}" if "maximum" in node else "")  # fmt: skip
    if "minimum" in node and "maximum" in node:
        what += f" in [{node['minimum']}, {node['maximum']}]"
    elif low or high:
        what += " " + " and ".join(r for r in (low, high) if r)
    return f"null or {what}" if nullable else what


def _messages(error, where: str) -> list[tuple[str, str]]:
    """(dotted key, what is wrong) for one jsonschema error; an unknown key names the valid ones."""
    key = _key(where, error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        known = set(error.schema.get("properties", {}))
        if "$ref" in error.schema:  # unevaluatedProperties: also the keys of the definition it points to
            known |= set(_subschema(_resolve(error.schema["$ref"])).get("properties", {}))
        return [(_key(key, [name]), f"unknown key; valid: {', '.join(sorted(known))}")
                for name in sorted(set(error.instance) - known)]
    if "propertyNames" in error.schema_path:  # a key of a mapping whose keys are names (masks)
        return [(_key(key, [error.instance]), f"unknown name; valid: {', '.join(map(str, error.schema['enum']))}")]
    if error.validator == "required":
        return [(_key(key, [name]), "missing (required)") for name in error.validator_value if name not in error.instance]
    if error.validator in ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        hint = _string_hint(error.instance, error.schema)
        return [(key, f"must be {describe(error.schema)}, got {error.instance!r}{hint}")]
    return [(key, error.message)]


def _string_hint(value, node: dict) -> str:
    """Why a number or boolean the schema asks for arrived as a string ('3', 'true', '1e-3'), or ''."""
    kinds = set(_types(_subschema(node)))
    try:
        parsed = yaml.safe_load(value) if isinstance(value, str) else None
        number = float(value) if isinstance(parsed, str) else None
    except (yaml.YAMLError, ValueError):
        return ""
    if number is not None:  # YAML 1.1 (PyYAML, Snakemake) reads 1e-3 and 1.0e3 as text: it wants 1.0e-3, 1.0e+3
        mantissa, _, exponent = value.strip().lower().partition("e")
        if "number" in kinds and exponent:
            sign = "" if exponent[:1] in ("+", "-") else "+"
            written = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign}{exponent}"
            return f" (YAML reads a number with an exponent as text unless it has a decimal point and a signed " \
                   f"exponent: write {written})"
        return f" (write {int(number)})" if "integer" in kinds and number.is_integer() else ""
    if isinstance(parsed, bool):  # before int: a bool is an int in Python
        wanted = "boolean" in kinds
    elif isinstance(parsed, int):
        wanted = bool(kinds & {"number", "integer"})
    else:
        wanted = isinstance(parsed, float) and "number" in kinds
    # Snakemake's cli.parse_config reads a value inside a list or mapping with YAML's BaseLoader: all strings.
    return (" (a string, as `snakemake --config` passes every value inside a list or mapping: give it unquoted "
            "in a config file, --configfile)") if wanted else ""


def problems(instance, section: str | None = None, where: str | None = None) -> list[tuple[str, str]]:
    """Every problem of `instance` against definition `section` (None: the whole config schema), as
    (dotted key, message) pairs sorted by key; keys start with `where` (default: the section's name)."""
    root = schema()
    if section is None:
        target, where = root, where or ""
    else:
        definition(section)  # an unknown section is a programming error, not the user's
        target = {"$schema": root["$schema"], "definitions": root["definitions"],
                  "$ref": f"#/definitions/{section}", "unevaluatedProperties": False}
        where = section if where is None else where
    found = []
    for error in _validator_class()(target).iter_errors(instance):
        found += [m for m in _messages(error, where) if m not in found]
    return sorted(found)


# ------------------------------------------------------------------------------------------ defaults


def _with_defaults(node: dict, value: dict) -> dict:
    """`value` with every missing key that has a default; mappings are filled key by key, all the way down."""
    node = _subschema(node)
    out = dict(value)
    for name, sub in node.get("properties", {}).items():
        sub = _subschema(sub)
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        elif "properties" in sub and isinstance(out.get(name, {}), dict):
            filled = _with_defaults(sub, out.get(name, {}))
            if filled or name in out:
                out[name] = filled
    return out


def defaults(section: str) -> dict:
    """The section's defaults: what a subcommand runs with when --params sets nothing."""
    return _with_defaults(definition(section), {})


def fill(section: str, params: dict) -> dict:
    """`params` checked against its section (a UserError names every problem and the section) and completed
    with the section's defaults. Call it before anything is written."""
    found = problems(params, section)
    if found:
        lines = "; ".join(f"{key}: {message}" for key, message in found)
        raise UserError(f"{lines} (--params of `{section}`, defined in {SCHEMA_PATH.name})")
    return _with_defaults(definition(section), params)


def dam_search_recipe(config: dict) -> dict:
    """The DAM search's recipe: `pretrain` with the config's `dam_search` keys over it, and its `model` merged key
    by key. A whole-section merge would let `dam_search: {model: {attention_backend: sdpa}}` drop pretrain's
    model keys for the schema's defaults, and the searched model would silently have another shape than the
    fixed-mask models it is compared with. The workflow, validate.py and the cost plan all take it from here."""
    pretrain, search = config["pretrain"], config.get("dam_search") or {}
    merged = {**pretrain, **search}
    if "model" in search:
        merged["model"] = {**pretrain.get("model", {}), **search["model"]}
    return merged
