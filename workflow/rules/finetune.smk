# Fine-tuning: every pretrained variant x seed x every task, with one shared recipe and per-task overrides
# (`finetune.per_task`, e.g. SQuAD's length 384 in config/paper.yaml). The fine-tuning seed is the task's own
# (`finetune.seed`), the same for every variant and pretraining seed: all of them see the same training and
# eval examples, so the report can pair them on the eval examples.


rule finetune:
    input:
        # Written by `pretrain` (fixed masks), `dam_search` (DAM variants: the searched model, fine-tuned with
        # its binarized mask) or `pretrain_learned` (the `_retrain` ablation).
        model=lambda wc: f"{pretrained_dir(wc.variant, wc.seed)}/model",
        mask=lambda wc: (
            [f"{pretrained_dir(wc.variant, wc.seed)}/mask.safetensors"] if VARIANTS[wc.variant]["role"] == SEARCH else []
        ),
        tokenizer=rules.tokenizer.output[0],
        task=finetune_task_input,
    output:
        metrics=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/metrics.json",
        predictions=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/predictions.json",
        log=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/log.jsonl",
    params:
        launch=launch,
        recipe=lambda wc: as_json(finetune_recipe(wc.task)),
        mask_file=lambda wc, input: f"--mask-file {input.mask}" if input.mask else "",
        source=lambda wc: as_json(task_source(wc.task)),
        out=lambda wc, output: parent(output.metrics),
        state=lambda wc, output: state_dir(parent(output.metrics)),
    log:
        f"{LOGS}/finetune/{{variant}}/seed{{seed}}/{{task}}.log",
    benchmark:
        f"{LOGS}/benchmarks/finetune/{{variant}}/seed{{seed}}/{{task}}.tsv"
    threads: lambda wc: rule_resources("finetune", wc.variant)["threads"]
    resources:
        **training_resources("finetune"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert finetune --model {input.model} --tokenizer {input.tokenizer}"
        " --task {wildcards.task} --task-source {params.source:q} --params {params.recipe:q} {params.mask_file}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"
