# Pretraining (MLM + NSP) of one BERT per fixed attention mask and seed (config `seeds`). Resumable state lives
# in results/<run>/state/, which is deliberately not an output: Snakemake deletes the outputs of a failed job,
# and the checkpoints must survive a crash or preemption so that the rerun continues instead of starting over.


rule pretrain:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        model=directory(f"{RESULTS}/pretrain/{{fixed}}/seed{{seed}}/model"),
        summary=f"{RESULTS}/pretrain/{{fixed}}/seed{{seed}}/summary.json",
        log=f"{RESULTS}/pretrain/{{fixed}}/seed{{seed}}/log.jsonl",
    params:
        launch=launch,
        examples=lambda wc, input: parent(input.examples),
        recipe=lambda wc: as_json(pretrain_recipe(wc.seed)),
        mask=lambda wc: VARIANTS[wc.fixed]["mask"],
        mask_params=lambda wc: as_json(VARIANTS[wc.fixed]["params"]),
        out=lambda wc, output: parent(output.summary),
        state=lambda wc, output: state_dir(parent(output.summary)),
    log:
        f"{LOGS}/pretrain/{{fixed}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/pretrain/{{fixed}}/seed{{seed}}.tsv"
    threads: resource("pretrain", "threads")
    resources:
        **training_resources("pretrain"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert pretrain --examples {params.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask {params.mask} --mask-params {params.mask_params:q}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"
