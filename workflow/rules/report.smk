# Tables against the paper's published numbers, the paper's figures, and findings.md (claims vs this run).
# Every (variant, seed) is read, from the paths in REPORT (common.smk's report_params: the variant records with
# their folders' patterns); the tables rule also writes the bootstrap draws (bootstrap.npz) that findings.md's intervals
# are computed from. Each rule's --out is its output's folder (or file), derived here, never restated.

REPORT = as_json(report_params())

PRETRAINED = [f"{pretrained_dir(v, s)}/{file}" for v in VARIANTS for s in SEEDS for file in ("summary.json", "log.jsonl")]
DAM_OUTPUTS = [
    f"{pretrained_dir(v, s)}/{file}" for v in SEARCHES for s in SEEDS for file in ("snapshots.npz", "mask.safetensors")
]
FINETUNED = [
    f"{finetuned_dir(v, s, t)}/{file}" for v in VARIANTS for s in SEEDS for t in TASKS for file in ("metrics.json", "predictions.json")
]
FIGURES = ("masks", "importance", "keep_trajectories", "dam_u_snapshots", "score_vs_sparsity", "loss_curves")


rule tables:
    input:
        PRETRAINED,
        DAM_OUTPUTS,
        FINETUNED,
    output:
        glue=report(f"{RESULTS}/tables/glue.csv", category="Tables"),
        glue_md=f"{RESULTS}/tables/glue.md",
        squad_swag=report(f"{RESULTS}/tables/squad_swag.csv", category="Tables"),
        squad_swag_md=f"{RESULTS}/tables/squad_swag.md",
        all_metrics=f"{RESULTS}/tables/all_metrics.csv",
        metrics=f"{RESULTS}/tables/metrics.json",
        bootstrap=f"{RESULTS}/tables/bootstrap.npz",
    params:
        report=lambda wc: REPORT,  # a function: its {seed}/{task} patterns are not wildcards
        out=lambda wc, output: parent(output.metrics),
    log:
        f"{LOGS}/tables.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert tables --params {params.report:q} --out {params.out} > {log} 2>&1"


rule figures:
    input:
        PRETRAINED,
        DAM_OUTPUTS,
        metrics=rules.tables.output.metrics,
    output:
        **{
            f"{name}_{ext}": report(f"{RESULTS}/figures/{name}.{ext}", category="Figures")
            if ext == "png"
            else f"{RESULTS}/figures/{name}.{ext}"
            for name in FIGURES
            for ext in ("png", "pdf")
        },
        loss_csv=f"{RESULTS}/figures/loss_curves.csv",
    params:
        report=lambda wc: REPORT,  # a function: its {seed}/{task} patterns are not wildcards
        out=lambda wc, output: parent(output.loss_csv),
    log:
        f"{LOGS}/figures.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert figures --params {params.report:q} --metrics {input.metrics} --out {params.out}"
        " > {log} 2>&1"


rule findings:
    input:
        DAM_OUTPUTS,
        PRETRAINED,
        metrics=rules.tables.output.metrics,
        bootstrap=rules.tables.output.bootstrap,
    output:
        report(f"{RESULTS}/findings.md", category="Findings"),
    params:
        report=lambda wc: REPORT,  # a function: its {seed}/{task} patterns are not wildcards
    log:
        f"{LOGS}/findings.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m sparsebert findings --params {params.report:q} --metrics {input.metrics}"
        " --bootstrap {input.bootstrap} --out {output} > {log} 2>&1"
