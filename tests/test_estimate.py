"""`sparsebert estimate`: the expected wall time of a run from its step timed here vs a measured reference."""

from __future__ import annotations

import json

import pytest
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


def reference(tmp_path, config_path, **over):
    ref = {"config": str(config_path), "config_sha256_16": estimate.config_digest(config_path), "date": "2026-12-04",
           "torch": "2.13.0", "machine": {"cpu": "Test CPU", "cores": 2, "isa": "avx2", "bf16_flags": [],
                                          "isa_cap": None},
           "precision": "fp32", "probe_step_s": 0.1, "dag_wall_s": 1200.0, "install_s": 90.0,
           "jobs": {"pretrain": {"jobs": 2, "seconds": 1800.0}, "finetune": {"jobs": 2, "seconds": 600.0}}, **over}
    path = tmp_path / "ref.json"
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
    line = estimate.estimate_line(TINY, config, reference(tmp_path, config), cores)
    assert line.startswith(f"estimate: about {minutes} min for the DAG on {cores} core(s) plus the install "
                           f"(measured 1.5 min there)"), line
    assert "Test CPU" in line and "differs" not in line
    config.write_text(yaml.safe_dump({**TINY, "seeds": [0]}))
    assert "the config differs from the reference run" in estimate.estimate_line(TINY, config, tmp_path / "ref.json", 2)


def test_no_reference_no_number(tmp_path):
    line = estimate.estimate_line(TINY, tmp_path / "c.yaml", tmp_path / "missing.json", 2)
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
    with pytest.raises(SystemExit):
        main(["estimate", "--configfile", str(config), "--record", str(tmp_path / "logs"), "--reference", str(out)])
    assert "--record needs --wall-seconds" in capsys.readouterr().err and not out.exists()
    main(["estimate", "--configfile", str(config), "--record", str(tmp_path / "logs"), "--wall-seconds", "600",
          "--reference", str(out)])
    ref = json.loads(out.read_text())
    assert ref["probe_step_s"] == 0.123 and ref["dag_wall_s"] == 600 and ref["jobs"]["pretrain"]["seconds"] == 100
    assert ref["config_sha256_16"] == estimate.config_digest(config)


def test_the_digest_reads_the_content_not_the_comments(tmp_path):
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text(yaml.safe_dump(TINY))
    b.write_text("# a comment that changed\n" + yaml.safe_dump(TINY, default_flow_style=True))
    c.write_text(yaml.safe_dump({**TINY, "run": "other"}))
    assert estimate.config_digest(a) == estimate.config_digest(b) != estimate.config_digest(c)
