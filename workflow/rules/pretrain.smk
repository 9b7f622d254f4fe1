# Pretraining (MLM + NSP) of one BERT per fixed attention mask and seed (config `seeds`). Resumable state lives in results/state/,
# which is deliberately not an output: Snakemake deletes the outputs of a failed job, and the checkpoints
# must survive a crash or preemption so that the rerun continues instead of starting over.


rule pretrain:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        model=directory("results/pretrain/{fixed}/seed{seed}/model"),
        summary="results/pretrain/{fixed}/seed{seed}/summary.json",
        log="results/pretrain/{fixed}/seed{seed}/log.jsonl",
    params:
        launch=launch,
        recipe=lambda wc: as_json(pretrain_recipe(wc.seed)),
        mask_params=lambda wc: as_json(config["masks"][wc.fixed]),
        out="results/pretrain/{fixed}/seed{seed}",
        state="results/state/pretrain/{fixed}/seed{seed}",
    log:
        "logs/pretrain/{fixed}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/pretrain/{fixed}/seed{seed}.tsv"
    threads: lambda wc: rule_resources("pretrain", wc.fixed)["threads"]
    resources:
        **training_resources("pretrain"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert pretrain --examples {input.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask {wildcards.fixed} --mask-params {params.mask_params:q}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"
