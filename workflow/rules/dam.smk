# DAM (the paper's differentiable attention mask): search a mask with lambda * L1 during pretraining (weights and
# mask trained jointly) and binarize it; the searched model is then fine-tuned with that mask fixed (official
# protocol, finetune.smk). Ablation (`dam_retrain: true`): pretrain from scratch with the learned fixed mask and
# the same budget as the fixed-mask variants.


rule dam_search:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        mask="results/dam/{dam}_{lam}/mask.safetensors",
        snapshots=report(
            "results/dam/{dam}_{lam}/snapshots.npz", category="DAM search", labels={"run": "{dam}_{lam}"}
        ),
        summary="results/dam/{dam}_{lam}/summary.json",
        log="results/dam/{dam}_{lam}/log.jsonl",
        model=directory("results/dam/{dam}_{lam}/model"),
    params:
        launch=launch,
        recipe=as_json(dam_recipe()),
        state="results/state/dam/{dam}_{lam}",
    log:
        "logs/dam_search/{dam}_{lam}.log",
    benchmark:
        "logs/benchmarks/dam_search/{dam}_{lam}.tsv"
    threads: lambda wc: rule_resources("dam_search", f"{wc.dam}_{wc.lam}")["threads"]
    resources:
        **training_resources("dam_search"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert dam-search --examples {input.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask {wildcards.dam} --dam-lambda {wildcards.lam}"
        " --out results/dam/{wildcards.dam}_{wildcards.lam} --state-dir {params.state} > {log} 2>&1"


rule pretrain_learned:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
        mask=rules.dam_search.output.mask,
    output:
        model=directory("results/pretrain/{dam}_{lam}_retrain/model"),
        summary="results/pretrain/{dam}_{lam}_retrain/summary.json",
        log="results/pretrain/{dam}_{lam}_retrain/log.jsonl",
    params:
        launch=launch,
        recipe=as_json(config["pretrain"]),
        state="results/state/pretrain/{dam}_{lam}_retrain",
    log:
        "logs/pretrain_learned/{dam}_{lam}.log",
    benchmark:
        "logs/benchmarks/pretrain_learned/{dam}_{lam}.tsv"
    threads: lambda wc: rule_resources("pretrain_learned", f"{wc.dam}_{wc.lam}")["threads"]
    resources:
        **training_resources("pretrain_learned"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert pretrain --examples {input.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask learned --mask-file {input.mask}"
        " --out results/pretrain/{wildcards.dam}_{wildcards.lam}_retrain --state-dir {params.state} > {log} 2>&1"
