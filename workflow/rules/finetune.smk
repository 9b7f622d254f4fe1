# Fine-tuning: every pretrained variant x every task, with one shared recipe.


rule finetune:
    input:
        # Written by `pretrain` (fixed masks) or `pretrain_learned` (DAM variants).
        model="results/pretrain/{variant}/model",
        tokenizer=rules.tokenizer.output[0],
        task=finetune_task_input,
    output:
        metrics="results/finetune/{variant}/{task}/metrics.json",
        predictions="results/finetune/{variant}/{task}/predictions.json",
        log="results/finetune/{variant}/{task}/log.jsonl",
    params:
        launch=launch,
        recipe=as_json(config["finetune"]),
        source=lambda wc: as_json(task_source(wc.task)),
        state="results/state/finetune/{variant}/{task}",
    log:
        "logs/finetune/{variant}/{task}.log",
    benchmark:
        "logs/benchmarks/finetune/{variant}/{task}.tsv"
    threads: lambda wc: rule_resources("finetune", wc.variant)["threads"]
    resources:
        **training_resources("finetune"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert finetune --model {input.model} --tokenizer {input.tokenizer}"
        " --task {wildcards.task} --task-source {params.source:q} --params {params.recipe:q}"
        " --out results/finetune/{wildcards.variant}/{wildcards.task} --state-dir {params.state} > {log} 2>&1"
