# Fine-tuning: every pretrained variant x every task, with one shared recipe and per-task overrides
# (`finetune.per_task`, e.g. SQuAD's length 384 in config/paper.yaml).


rule finetune:
    input:
        # Written by `pretrain` (fixed masks), `dam_search` (DAM variants: the searched model, fine-tuned with
        # its binarized mask) or `pretrain_learned` (the `_retrain` ablation).
        model=lambda wc: f"{pretrained_dir(wc.variant)}/model",
        mask=lambda wc: [f"results/dam/{wc.variant}/mask.safetensors"] if wc.variant in DAM_RUNS else [],
        tokenizer=rules.tokenizer.output[0],
        task=finetune_task_input,
    output:
        metrics="results/finetune/{variant}/{task}/metrics.json",
        predictions="results/finetune/{variant}/{task}/predictions.json",
        log="results/finetune/{variant}/{task}/log.jsonl",
    params:
        launch=launch,
        recipe=lambda wc: as_json(finetune_recipe(wc.task)),
        mask_file=lambda wc, input: f"--mask-file {input.mask}" if input.mask else "",
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
        " --task {wildcards.task} --task-source {params.source:q} --params {params.recipe:q} {params.mask_file}"
        " --out results/finetune/{wildcards.variant}/{wildcards.task} --state-dir {params.state} > {log} 2>&1"
