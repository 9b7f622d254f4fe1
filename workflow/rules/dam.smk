# DAM (the paper's differentiable attention mask): search a mask with lambda * L1 during pretraining (weights and
# mask trained jointly) and binarize it; the searched model is then fine-tuned with that mask fixed (official
# protocol, finetune.smk). Ablation (`dam_retrain: true`): pretrain from scratch with the learned fixed mask and
# the same budget as the fixed-mask variants. Each search and retraining runs once per seed (config `seeds`); a
# retraining uses the mask its own seed's search learned.


rule dam_search:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        mask="results/dam/{dam}_{lam}/seed{seed}/mask.safetensors",
        snapshots=report(
            "results/dam/{dam}_{lam}/seed{seed}/snapshots.npz",
            category="DAM search",
            labels={"run": "{dam}_{lam}", "seed": "{seed}"},
        ),
        summary="results/dam/{dam}_{lam}/seed{seed}/summary.json",
        log="results/dam/{dam}_{lam}/seed{seed}/log.jsonl",
        model=directory("results/dam/{dam}_{lam}/seed{seed}/model"),
    params:
        launch=launch,
        recipe=lambda wc: as_json(dam_recipe(wc.seed)),
        out="results/dam/{dam}_{lam}/seed{seed}",
        state="results/state/dam/{dam}_{lam}/seed{seed}",
    log:
        "logs/dam_search/{dam}_{lam}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/dam_search/{dam}_{lam}/seed{seed}.tsv"
    threads: lambda wc: rule_resources("dam_search", f"{wc.dam}_{wc.lam}")["threads"]
    resources:
        **training_resources("dam_search"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert dam-search --examples {input.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask {wildcards.dam} --dam-lambda {wildcards.lam}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"


rule pretrain_learned:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
        mask=rules.dam_search.output.mask,
    output:
        model=directory("results/pretrain/{dam}_{lam}_retrain/seed{seed}/model"),
        summary="results/pretrain/{dam}_{lam}_retrain/seed{seed}/summary.json",
        log="results/pretrain/{dam}_{lam}_retrain/seed{seed}/log.jsonl",
    params:
        launch=launch,
        recipe=lambda wc: as_json(pretrain_recipe(wc.seed)),
        out="results/pretrain/{dam}_{lam}_retrain/seed{seed}",
        state="results/state/pretrain/{dam}_{lam}_retrain/seed{seed}",
    log:
        "logs/pretrain_learned/{dam}_{lam}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/pretrain_learned/{dam}_{lam}/seed{seed}.tsv"
    threads: lambda wc: rule_resources("pretrain_learned", f"{wc.dam}_{wc.lam}")["threads"]
    resources:
        **training_resources("pretrain_learned"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert pretrain --examples {input.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask learned --mask-file {input.mask}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"
