# Tables against the paper's published numbers, the paper's figures, and findings.md (claims vs this run).
# Every (variant, seed) is read; the tables rule also writes the bootstrap draws (results/tables/bootstrap.npz)
# that findings.md's intervals are computed from.

# What the report code needs to know about the run (not the recipes: those are read from the summaries).
REPORT_PARAMS = as_json(
    {
        "scale": config["scale"],
        "proxy": PROXY,
        "seq_len": config["examples"].get("max_seq_length", 128),
        "masks": config["masks"],
        "dam_runs": DAM_RUNS,
        "retrains": RETRAINS,
        "variants": VARIANTS,
        "seeds": SEEDS,
        "pretrained": {variant: variant_dir(variant) for variant in VARIANTS},
        "tasks": TASKS,
        "report": config.get("report", {}),
    }
)

PRETRAINED = [f"{pretrained_dir(v, s)}/{file}" for v in VARIANTS for s in SEEDS for file in ("summary.json", "log.jsonl")]
DAM_OUTPUTS = expand(
    "results/dam/{run}/seed{seed}/{file}",
    run=DAM_RUNS,
    seed=SEEDS,
    file=["summary.json", "snapshots.npz", "mask.safetensors"],
)
FINETUNED = expand(
    "results/finetune/{variant}/seed{seed}/{task}/{file}",
    variant=VARIANTS,
    seed=SEEDS,
    task=TASKS,
    file=["metrics.json", "predictions.json"],
)


rule tables:
    input:
        PRETRAINED,
        DAM_OUTPUTS,
        FINETUNED,
    output:
        glue=report("results/tables/glue.csv", category="Tables"),
        glue_md="results/tables/glue.md",
        squad_swag=report("results/tables/squad_swag.csv", category="Tables"),
        squad_swag_md="results/tables/squad_swag.md",
        all_metrics="results/tables/all_metrics.csv",
        metrics="results/tables/metrics.json",
        bootstrap="results/tables/bootstrap.npz",
    params:
        report=REPORT_PARAMS,
    log:
        "logs/tables.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert tables --results results --params {params.report:q} --out results/tables > {log} 2>&1"


rule figures:
    input:
        PRETRAINED,
        DAM_OUTPUTS,
        metrics=rules.tables.output.metrics,
    output:
        **{
            f"{name}_{ext}": report(f"results/figures/{name}.{ext}", category="Figures")
            if ext == "png"
            else f"results/figures/{name}.{ext}"
            for name in ("masks", "importance", "dam_u_snapshots", "score_vs_sparsity", "loss_curves")
            for ext in ("png", "pdf")
        },
        loss_csv="results/figures/loss_curves.csv",
    params:
        report=REPORT_PARAMS,
    log:
        "logs/figures.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert figures --results results --params {params.report:q} --out results/figures > {log} 2>&1"


rule findings:
    input:
        DAM_OUTPUTS,
        metrics=rules.tables.output.metrics,
        bootstrap=rules.tables.output.bootstrap,
    output:
        report("results/findings.md", category="Findings"),
    params:
        report=REPORT_PARAMS,
    log:
        "logs/findings.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert findings --results results --params {params.report:q} --out {output} > {log} 2>&1"
