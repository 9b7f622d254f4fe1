"""`sparsebert estimate`: the expected wall time of a run from its step timed here vs a measured reference."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import torch
import yaml

from sparsebert import estimate
from sparsebert.io import UserError

TINY = {"run": "tiny", "tokenizer": {"vocab_size": 50}, "examples": {"max_seq_length": 16, "max_predictions_per_seq": 3},
        "pretrain": {"model": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 32}, "batch_size": 4, "precision": "fp32"}}


def write_benchmarks(logs, rows):
    for rel, seconds in rows.items():
        path = logs / "benchmarks" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t10\n")


def reference(tmp_path, config_path, name="ref.json", **over):
    ref = {"config": str(config_path), "config_sha256_16": estimate.config_digest(config_path), "date": "2026-12-04",
           "torch": "2.13.0", "machine": {"cpu": "Test CPU", "cores": 2, "isa": "avx2", "bf16_flags": [],
                                          "isa_cap": None},
           "precision": "fp32", "probe_step_s": 0.1, "dag_wall_s": 1200.0, "install_s": 90.0,
           "jobs": {"pretrain": {"jobs": 2, "seconds": 1800.0}, "finetune": {"jobs": 2, "seconds": 600.0}}, **over}
    path = tmp_path / name
    path.write_text(json.dumps(ref))
    return path


def test_job_seconds_sums_each_rules_benchmark_files(tmp_path):
    write_benchmarks(tmp_path, {"pretrain/dense/seed0.tsv": 100.5, "pretrain/dense/seed1.tsv": 99.5,
                                "finetune/dense/seed0.tsv": 40, "corpus/shard-00000.tsv": 3.25})
    assert estimate.job_seconds(tmp_path) == {"pretrain": {"jobs": 2, "seconds": 200.0},
                                              "finetune": {"jobs": 1, "seconds": 40.0},
                                              "corpus": {"jobs": 1, "seconds": 3.2}}
    with pytest.raises(UserError, match="no Snakemake benchmark files under"):
        estimate.job_seconds(tmp_path / "missing")


@pytest.mark.parametrize("step, cores, minutes", [(0.2, 2, 40), (0.05, 2, 10), (0.1, 1, 40), (0.1, 8, 10)])
def test_the_reference_wall_time_scales_by_this_cpus_step(tmp_path, monkeypatch, step, cores, minutes):
    """Reference: 20 min on 2 cores at 0.1 s a step, 2,400 job seconds. Twice the step: twice the time; one core:
    the jobs run one after the other (2 x); 8 cores: the job seconds spread (2,400 / 8 s = 5 min) but the
    data and report jobs stay serial (at least half the 2-core time, 10 min)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (step, "fp32"))
    line = estimate.estimate_line(TINY, config, [reference(tmp_path, config)], cores)
    assert line.startswith(f"estimate: about {minutes} min for the DAG on {cores} core(s) plus the install "
                           f"(measured 1.5 min there)"), line
    assert "Test CPU" in line and "differs" not in line
    config.write_text(yaml.safe_dump({**TINY, "seeds": [0]}))
    assert estimate.estimate_line(TINY, config, [tmp_path / "ref.json"], 2).endswith(
        "; the config differs from the reference run, so this is rougher.")


def test_no_reference_no_number(tmp_path):
    line = estimate.estimate_line(TINY, tmp_path / "c.yaml", [tmp_path / "missing.json"], 2)
    assert "no reference timing" in line and "about" not in line


def test_probe_times_the_configs_own_step():
    seconds, name = estimate.probe_step_seconds(TINY)
    assert 0 < seconds < 1 and name == "fp32"


@pytest.mark.parametrize(("optimizer", "expected"), [("adamw", "AdamW"), ("lamb", "Lamb")])
def test_probe_steps_the_optimizer_the_pipeline_builds(optimizer, expected, monkeypatch):
    """The probe times the run's own step: the recipe's optimizer, built as training.build_optimizer builds it
    (on the CPU AdamW's multi-tensor path, not torch's default per-tensor loop)."""
    from sparsebert import training

    built = []

    def spy(model, recipe):
        built.append(training_build(model, recipe))
        return built[-1]

    training_build = training.build_optimizer
    monkeypatch.setattr(training, "build_optimizer", spy)
    estimate.probe_step_seconds({**TINY, "pretrain": {**TINY["pretrain"], "optimizer": optimizer}})
    (opt,) = built
    assert type(opt).__name__ == expected
    assert opt.param_groups[0]["foreach"] is True
    assert opt.state  # the probe's steps went through this optimizer


def test_record_writes_the_reference_and_refuses_without_a_wall_time(tmp_path, monkeypatch, capsys):
    from sparsebert.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    write_benchmarks(tmp_path / "logs", {"pretrain/dense/seed0.tsv": 100})
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (0.123, "fp32"))
    out = tmp_path / "ref.json"
    monkeypatch.setattr(estimate, "REFERENCES", tmp_path / "references")  # where a wrong default would write
    with pytest.raises(SystemExit):
        main(["estimate", "--configfile", str(config), "--record", str(tmp_path / "logs"), "--reference", str(out)])
    assert capsys.readouterr().err == ("sparsebert estimate: error: --record needs --wall-seconds (the measured wall "
                                       "time of the run's DAG)\n") and not out.exists()
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (0.1234567, "bf16") if config == TINY else None)
    monkeypatch.setattr(estimate, "machine", lambda: {"cpu": "Test CPU"})
    main(["estimate", "--configfile", str(config), "--record", str(tmp_path / "logs"), "--wall-seconds", "600.46",
          "--install-seconds", "90.06", "--reference", str(out)])
    ref = json.loads(out.read_text())
    assert ref == {"run": "tiny", "config": str(config), "config_sha256_16": estimate.config_digest(config),
                   "date": date.today().isoformat(), "torch": torch.__version__, "machine": {"cpu": "Test CPU"},
                   "precision": "bf16", "probe_step_s": 0.12346, "dag_wall_s": 600.5, "install_s": 90.1,
                   "jobs": {"pretrain": {"jobs": 1, "seconds": 100.0}}}
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}: ") and json.loads(printed.removeprefix(f"wrote {out}: ")) == ref
    assert not (tmp_path / "references").exists()
    (tmp_path / "references").mkdir()
    main(["estimate", "--configfile", str(config), "--record", str(tmp_path / "logs"), "--wall-seconds", "600.46"])
    assert json.loads((tmp_path / "references" / "demo_tiny.json").read_text()) == {**ref, "install_s": None}


def test_the_digest_reads_the_content_not_the_comments(tmp_path):
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text(yaml.safe_dump(TINY))
    b.write_text("# a comment that changed\n" + yaml.safe_dump(TINY, default_flow_style=True))
    c.write_text(yaml.safe_dump({**TINY, "run": "other"}))
    assert estimate.config_digest(a) == estimate.config_digest(b) != estimate.config_digest(c)
    reordered = tmp_path / "d.yaml"
    reordered.write_text(yaml.safe_dump(dict(reversed(list(TINY.items()))), sort_keys=False))
    assert estimate.config_digest(reordered) == estimate.config_digest(a) and len(estimate.config_digest(a)) == 16


@pytest.mark.parametrize("cores, minutes", [(1, 40), (2, 20), (4, 10), (16, 10)])
def test_the_whole_estimate_line(tmp_path, monkeypatch, cores, minutes):
    """The step here equals the reference's (1 s): 20 min on its 2 cores; one core serializes the jobs (40);
    4 cores spread 2,400 job seconds (10 min) and the serial half floors it at 10; 16 cores: 2.5, floored at 10."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda c: (1.0, "bf16") if c == TINY else (9.9, "fp32"))
    line = estimate.estimate_line(TINY, config, [reference(tmp_path, config, probe_step_s=1.0, machine={
        "cpu": "Test CPU", "cores": 2, "isa": "avx512f", "isa_cap": "ONEDNN_MAX_CPU_ISA=AVX2"})], cores)
    assert line == (f"estimate: about {minutes} min for the DAG on {cores} core(s) plus the install (measured 1.5 min "
                    f"there). This CPU runs one pretraining step of this config in 1000 ms (bf16); the reference "
                    f"machine (Test CPU, avx512f, ONEDNN_MAX_CPU_ISA=AVX2, fp32) in 1000 ms and ran the whole DAG in "
                    f"20.0 min on 2 cores (ref.json, 2026-12-04).")


def test_a_reference_without_install_time_or_isa_cap_says_neither(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (0.3, "fp32"))
    line = estimate.estimate_line(TINY, config, [reference(tmp_path, config, install_s=None)], 2)
    assert line.startswith("estimate: about 60 min for the DAG on 2 core(s). This CPU runs one pretraining step of "
                           "this config in 300 ms (fp32); the reference machine (Test CPU, avx2, fp32) in 100 ms")


@pytest.mark.parametrize("config, run", [({"run": "cpu_full"}, "cpu_full"), ({}, "default")])
def test_no_reference_says_where_the_job_times_will_be(tmp_path, config, run):
    assert estimate.estimate_line(config, tmp_path / "c.yaml", [tmp_path / "missing.json"], 2) == (
        f"estimate: no reference timing for this config ({tmp_path}/missing.json: missing): no estimate; the "
        f"run's per-job times land in logs/{run}/benchmarks/.")
    assert estimate.estimate_line(config, tmp_path / "c.yaml", [tmp_path / "a.json", tmp_path / "b.json"], 2) == (
        f"estimate: no reference timing for this config ({tmp_path}/a.json, {tmp_path}/b.json: missing): no "
        f"estimate; the run's per-job times land in logs/{run}/benchmarks/.")
    assert estimate.estimate_line(config, tmp_path / "c.yaml", [], 2) == (
        f"estimate: no reference timing for this config ({estimate.REFERENCES}/demo_{run}*.json: missing): no "
        f"estimate; the run's per-job times land in logs/{run}/benchmarks/.")


def test_a_runs_references_are_its_own_file_and_the_machine_variants_that_name_it(tmp_path):
    for name, run in [("demo_x.json", None), ("demo_x_amx.json", "x"), ("demo_x_y.json", "x_y"),
                      ("demo_x_old.json", None), ("demo_xy.json", "x")]:
        (tmp_path / name).write_text(json.dumps({} if run is None else {"run": run}))
    assert estimate.recorded_runs("x", tmp_path) == [tmp_path / "demo_x.json", tmp_path / "demo_x_amx.json"]
    assert estimate.recorded_runs("x_y", tmp_path) == [tmp_path / "demo_x_y.json"]
    (tmp_path / "demo_x.json").unlink()
    assert estimate.recorded_runs("x", tmp_path) == [tmp_path / "demo_x_amx.json"]
    assert estimate.recorded_runs("z", tmp_path) == []


HERE = {"cpu": "EPYC", "cores": 2, "isa": "avx2", "bf16_flags": [], "isa_cap": None}


@pytest.mark.parametrize("here, prec, chosen, why", [
    (HERE, "fp32", "avx2.json", "same precision, instruction set, CPU model as here"),
    (HERE, "bf16", "amx.json", "same precision as here"),  # the arithmetic first, then the instruction set
    ({**HERE, "isa": "avx512f", "isa_cap": "ONEDNN_MAX_CPU_ISA=AVX2"}, "fp32", "capped.json",
     "same precision, instruction set, CPU model as here"),
    ({**HERE, "cpu": "Xeon", "isa": "avx512f"}, "fp32", "avx2_new.json", "same precision as here"),  # the newest
    ({**HERE, "cpu": "Xeon", "isa": "avx512f"}, "fp16", "avx512.json", "same instruction set, CPU model as here"),
    ({**HERE, "cpu": "Arm", "isa": "older"}, "fp16", "avx2_new.json",
     "none matches this machine's precision or instruction set"),
])
def test_the_estimate_uses_the_reference_nearest_this_machine(tmp_path, monkeypatch, here, prec, chosen, why):
    """Five recorded runs of one config (ten-fold different steps, so the estimate shows which one it used): the
    nearest shares the precision, then the instruction set and its cap, then the CPU model; then the same config,
    then the newest. (amx.json: 2,000 min, capped.json 200, avx2.json 20, avx2_new.json 2, avx512.json 0.2.)"""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    machines = {"amx.json": ("bf16", "Xeon Max", "avx512f", None, "2026-12-05", 0.01),
                "capped.json": ("fp32", "EPYC", "avx512f", "ONEDNN_MAX_CPU_ISA=AVX2", "2026-12-05", 0.1),
                "avx2.json": ("fp32", "EPYC", "avx2", None, "2026-12-06", 1.0),
                "avx2_new.json": ("fp32", "Other", "avx2", None, "2026-12-07", 10.0),
                "avx512.json": ("bf16", "Xeon", "avx512f", None, "2026-12-01", 100.0)}
    paths = [reference(tmp_path, config, name, precision=p, date=d, probe_step_s=step, machine={
        "cpu": cpu, "cores": 2, "isa": isa, "isa_cap": cap}) for name, (p, cpu, isa, cap, d, step) in machines.items()]
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (1.0, prec))
    monkeypatch.setattr(estimate, "machine", lambda: here)
    line = estimate.estimate_line(TINY, config, paths, 2)
    minutes = 20 / machines[chosen][-1]
    assert line.startswith(f"estimate: about {minutes:.0f} min for the DAG on 2 core(s)"), line
    assert line.endswith(f"({chosen}, {machines[chosen][4]}; the nearest of 5 recorded runs: {why}).")


def test_the_same_config_wins_between_otherwise_equal_references(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    machine = {"cpu": "EPYC", "cores": 2, "isa": "avx2", "isa_cap": None}
    older = reference(tmp_path, config, "same.json", machine=machine, date="2026-12-01")
    newer = reference(tmp_path, config, "other.json", machine=machine, date="2026-12-09", config_sha256_16="0" * 16)
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (0.1, "fp32"))
    monkeypatch.setattr(estimate, "machine", lambda: {**machine, "bf16_flags": []})
    assert "(same.json, 2026-12-01; the nearest of 2 recorded runs" in estimate.estimate_line(
        TINY, config, [newer, older], 2)


def test_the_committed_references_of_claim_1s_demo_pick_this_machines_kind():
    """The references the repository ships name their run, and on an AVX2-only CPU in fp32 the claim-1 demo's
    estimate starts from the run measured on such a CPU, not from the bf16 ones."""
    runs = estimate.recorded_runs("cpu_claim1", estimate.REFERENCES)
    assert [path.name for path in runs] == ["demo_cpu_claim1.json", "demo_cpu_claim1_epyc_avx2.json",
                                            "demo_cpu_claim1_xeon_amx.json"]
    here = {"cpu": "AMD EPYC", "cores": 2, "isa": "avx2", "bf16_flags": [], "isa_cap": None}
    config = estimate.REFERENCES.parents[1] / "config" / "cpu_claim1.yaml"
    refs = {path: estimate.read_reference(path) for path in runs}
    path, ref, why = estimate.nearest(refs, "fp32", here, estimate.config_digest(config))
    assert path.name == "demo_cpu_claim1_epyc_avx2.json" and ref["precision"] == "fp32"
    assert why == "; the nearest of 3 recorded runs: same precision, instruction set, CPU model as here"
    path, _, _ = estimate.nearest(refs, "bf16", {**here, "isa": "avx512f", "bf16_flags": ["avx512_bf16"]}, "")
    assert path.name == "demo_cpu_claim1.json"


def test_every_committed_reference_is_one_the_estimate_can_read():
    paths = sorted(estimate.REFERENCES.glob("demo_*.json"))
    assert len(paths) >= 6
    for path in paths:
        assert estimate.read_reference(path)["probe_step_s"] > 0, path


def without(mapping: dict, dotted: str) -> dict:
    """`mapping` (deep-copied) without the key at the dotted path."""
    out = json.loads(json.dumps(mapping))
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    del node[last]
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda ref: "{not json", " is not readable JSON: Expecting property name"),
    (lambda ref: [ref], " must hold a JSON object, got list"),
    (lambda ref: without(ref, "probe_step_s"), ": 'probe_step_s' is a required property; write it anew with"),
    (lambda ref: {**ref, "probe_step_s": 0}, ": probe_step_s: 0 is less than or equal to the minimum of 0;"),
    (lambda ref: {**ref, "dag_wall_s": "20 min"}, ": dag_wall_s: '20 min' is not of type 'number';"),
    (lambda ref: without(ref, "machine.cores"), ": machine: 'cores' is a required property;"),
    (lambda ref: {**ref, "machine": {**ref["machine"], "cores": 0}}, ": machine.cores: 0 is less than the minimum"),
    (lambda ref: without(ref, "jobs.finetune.seconds"), ": jobs.finetune: 'seconds' is a required property;"),
    (lambda ref: {**ref, "install_s": "1 min"}, ": install_s: '1 min' is not of type 'number', 'null';"),
    (lambda ref: {**ref, "probe_step_s": float("nan")}, ": probe_step_s: nan is not of type 'number';"),
])  # fmt: skip
def test_a_damaged_reference_ends_in_one_error_naming_the_file_and_the_key(tmp_path, monkeypatch, damage, message):
    """`make demo` prints the estimate first: a reference damaged by hand or by a merge says which file and key,
    instead of a KeyError traceback or a division by zero halfway through."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    good = reference(tmp_path, config, "good.json")
    broken = tmp_path / "demo_tiny_broken.json"
    damaged = damage(json.loads(good.read_text()))
    broken.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: pytest.fail("probed before reading"))
    with pytest.raises(UserError) as caught:
        estimate.estimate_line(TINY, config, [good, broken], 2)
    assert str(caught.value).startswith(f"reference timing {broken}{message}")
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (0.1, "fp32"))
    assert "about 20 min" in estimate.estimate_line(TINY, config, [good], 2)  # the intact one still serves


def test_a_reference_that_is_not_json_is_named_when_the_runs_references_are_listed(tmp_path):
    (tmp_path / "demo_x_amx.json").write_text("")
    with pytest.raises(UserError, match=f"^reference timing {tmp_path}/demo_x_amx.json is not readable JSON"):
        estimate.recorded_runs("x", tmp_path)


@pytest.mark.parametrize("flags, isa", [({"avx2", "avx512f"}, "avx512f"), ({"avx2", "fma"}, "avx2"),
                                        ({"sse4_2"}, "older")])
def test_the_machine_record_names_the_instruction_set(monkeypatch, flags, isa):
    monkeypatch.setattr(estimate.precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(estimate.precision, "cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(estimate.precision, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(estimate.precision, "isa_cap", lambda: "ATEN_CPU_CAPABILITY=avx2")
    monkeypatch.setattr(estimate.os, "cpu_count", lambda: 3)
    assert estimate.machine() == {"cpu": "Test CPU", "cores": 3, "isa": isa, "bf16_flags": ["avx512_bf16"],
                                  "isa_cap": "ATEN_CPU_CAPABILITY=avx2"}


def test_the_command_line_reads_the_config_and_its_reference(tmp_path, monkeypatch, capsys):
    from sparsebert.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    seen = []
    monkeypatch.setattr(estimate, "estimate_line", lambda *args: seen.append(args) or "the line")
    monkeypatch.setattr(estimate.os, "cpu_count", lambda: 6)
    monkeypatch.setattr(estimate, "REFERENCES", tmp_path)  # no recorded run of `tiny`
    main(["estimate", "--configfile", str(config)])
    main(["estimate", "--configfile", str(config), "--cores", "3", "--reference", str(tmp_path / "r.json")])
    monkeypatch.setattr(estimate.os, "cpu_count", lambda: None)  # unknown: one core
    main(["estimate", "--configfile", str(config)])
    assert capsys.readouterr().out == "the line\nthe line\nthe line\n"
    assert seen == [(TINY, config, [], 6), (TINY, config, [tmp_path / "r.json"], 3), (TINY, config, [], 1)]
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", "--configfile", str(tmp_path / "none.yaml")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"sparsebert estimate: error: config file not found: {tmp_path}/none.yaml\n"


def test_the_default_config_and_run_name(tmp_path, monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    estimate.add_arguments(parser)
    args = parser.parse_args(["--wall-seconds", "61.5", "--install-seconds", "9", "--cores", "4"])
    assert (args.configfile, args.reference, args.record, args.cores, args.wall_seconds, args.install_seconds) == (
        Path("config/config.yaml"), None, None, 4, 61.5, 9.0)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({"pretrain": {}}))  # no run name: "default"
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(estimate, "estimate_line", lambda *a: seen.append(a[2]) or "")
    estimate.run(parser.parse_args([]))
    assert estimate.REFERENCES == estimate.Path(estimate.__file__).parents[2] / "benchmarks" / "results"
    assert seen == [[estimate.REFERENCES / "demo_default.json", estimate.REFERENCES / "demo_default_epyc_avx2.json",
                     estimate.REFERENCES / "demo_default_epyc_avx512_bf16.json",
                     estimate.REFERENCES / "demo_default_xeon_amx.json"]]


# The reference: 20 min on ref_cores cores at 0.5 s a step, 3,000 job seconds.
@pytest.mark.parametrize("step, ref_cores, cores, minutes", [
    (1.0, 2, 3, 33),  # twice the step: 6,000 job seconds over 3 cores, 33.3 min (above the serial 20 x 2 / 2)
    (1.0, 4, 2, 80),  # half the reference's 4 cores: 20 min x 2 (cores) x 2 (step)
    (0.5, 2, 2, 20),  # the reference's cores: its wall time, not its job seconds spread (3,000 / 2 s = 25 min)
    (0.25, 2, 8, 5),  # half the step on 8 cores: 1,500 / 8 s = 3.1 min, below the serial 20 x 0.5 / 2 = 5
])
def test_the_wall_time_scales_by_the_step_and_the_cores(tmp_path, monkeypatch, step, ref_cores, cores, minutes):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    monkeypatch.setattr(estimate, "probe_step_seconds", lambda config: (step, "fp32"))
    ref = reference(tmp_path, config, probe_step_s=0.5, install_s=600.0, machine={"cpu": "Test CPU", "cores": ref_cores,
                    "isa": "avx2"}, jobs={"pretrain": {"jobs": 1, "seconds": 3000.0}})
    line = estimate.estimate_line(TINY, config, [ref], cores)
    assert line.startswith(f"estimate: about {minutes} min for the DAG on {cores} core(s) plus the install (measured "
                           f"10.0 min there). This CPU runs one pretraining step of this config in "
                           f"{step * 1000:.0f} ms (fp32); the reference machine (Test CPU, avx2, fp32) in 500 ms"), line


@pytest.fixture
def probe_batches(monkeypatch):
    """(vocab size, batch) of every forward pass the probe makes; the probe stops after its minimum of steps."""
    from sparsebert import pretrain

    seen = []
    build_model = pretrain.build_model

    def spy(recipe, vocab, T, *args):
        model = build_model(recipe, vocab, T, *args)
        forward = model.forward
        model.forward = lambda **batch: seen.append((vocab, batch)) or forward(**batch)
        return model

    monkeypatch.setattr(pretrain, "build_model", spy)
    monkeypatch.setattr(estimate, "PROBE_SECONDS", 0.0)
    return seen


def test_the_probe_runs_the_configs_shape_and_threads(monkeypatch, probe_batches):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    estimate.probe_step_seconds({**TINY, "resources": {"pretrain": {"threads": 3}}})
    estimate.probe_step_seconds({"pretrain": TINY["pretrain"]})  # the schema's examples and vocabulary (8000)
    estimate.probe_step_seconds({"pretrain": TINY["pretrain"], "tokenizer": {"pretrained": "bert-base-cased"}})
    shapes = {(vocab, *batch["input_ids"].shape, batch["masked_lm_positions"].shape[1])
              for vocab, batch in probe_batches}
    assert sorted(shapes) == [(50, 4, 16, 3), (8000, 4, 128, 20), (28996, 4, 128, 20)]
    caller = torch.get_num_threads()  # the real one: only the setter is recorded
    assert threads == [3, caller, 1, caller, 1, caller]  # the job's threads for the probe, then the caller's back


def test_the_probe_times_seven_steps_of_a_real_pretraining_batch(probe_batches):
    """Two warm-up steps, then at least five timed ones (PROBE_SECONDS 0 here), each on a batch shaped as the
    examples are: ids of real tokens (>= 5), one segment, no padding, P sorted distinct masked positions and their
    ids, NSP labels; the model is the config's, dense."""
    estimate.probe_step_seconds(TINY)
    assert len(probe_batches) == 7
    batch = probe_batches[0][1]
    assert sorted(batch) == ["attention_mask", "input_ids", "masked_lm_ids", "masked_lm_positions",
                             "next_sentence_label", "token_type_ids"]
    ids, positions = batch["input_ids"], batch["masked_lm_positions"]
    assert ids.shape == (4, 16) and int(ids.min()) >= 5 and int(ids.max()) < 50
    assert torch.equal(batch["token_type_ids"], torch.zeros(4, 16, dtype=torch.long))
    assert torch.equal(batch["attention_mask"], torch.ones(4, 16, dtype=torch.long))
    assert positions.shape == (4, 3) and bool((positions.diff(dim=1) > 0).all())
    assert torch.equal(batch["masked_lm_ids"], ids.gather(1, positions))
    assert torch.equal(batch["next_sentence_label"], torch.zeros(4, dtype=torch.long))
    assert {name: t.dtype for name, t in batch.items()} == dict.fromkeys(batch, torch.long)
