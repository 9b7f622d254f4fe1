# DAM (the paper's differentiable attention mask): search a mask with lambda * L1 during pretraining (weights and
# mask trained jointly) and binarize it; the searched model is then fine-tuned with that mask fixed (official
# protocol, finetune.smk). Ablation (`dam_retrain: true`): pretrain from scratch with the learned fixed mask and
# the same budget as the fixed-mask variants. Each search and retraining runs once per seed (config `seeds`); a
# retraining uses the mask its own seed's search learned. A variant's DAM type and lambda are looked up in
# VARIANTS (common.smk), never parsed from its name.


rule dam_search:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        mask=f"{RESULTS}/dam/{{search}}/seed{{seed}}/mask.safetensors",
        snapshots=report(
            f"{RESULTS}/dam/{{search}}/seed{{seed}}/snapshots.npz",
            category="DAM search",
            labels={"run": "{search}", "seed": "{seed}"},
        ),
        summary=f"{RESULTS}/dam/{{search}}/seed{{seed}}/summary.json",
        log=f"{RESULTS}/dam/{{search}}/seed{{seed}}/log.jsonl",
        model=directory(f"{RESULTS}/dam/{{search}}/seed{{seed}}/model"),
    params:
        launch=launch,
        examples=lambda wc, input: parent(input.examples),
        recipe=lambda wc: as_json(dam_recipe(wc.seed)),
        dam_type=lambda wc: VARIANTS[wc.search]["mask"],
        lam=lambda wc: as_json(VARIANTS[wc.search]["lambda"]),
        out=lambda wc, output: parent(output.summary),
        state=lambda wc, output: state_dir(parent(output.summary)),
    log:
        f"{LOGS}/dam_search/{{search}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/dam_search/{{search}}/seed{{seed}}.tsv"
    threads: resource("dam_search", "threads")
    resources:
        **training_resources("dam_search"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert dam-search --examples {params.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask {params.dam_type} --dam-lambda {params.lam}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"


rule pretrain_learned:
    input:
        examples=rules.examples.output[0],
        tokenizer=rules.tokenizer.output[0],
        mask=lambda wc: f"{pretrained_dir(VARIANTS[wc.retrain]['learned_from'], wc.seed)}/mask.safetensors",
    output:
        model=directory(f"{RESULTS}/pretrain/{{retrain}}/seed{{seed}}/model"),
        summary=f"{RESULTS}/pretrain/{{retrain}}/seed{{seed}}/summary.json",
        log=f"{RESULTS}/pretrain/{{retrain}}/seed{{seed}}/log.jsonl",
    params:
        launch=launch,
        examples=lambda wc, input: parent(input.examples),
        recipe=lambda wc: as_json(pretrain_recipe(wc.seed)),
        out=lambda wc, output: parent(output.summary),
        state=lambda wc, output: state_dir(parent(output.summary)),
    log:
        f"{LOGS}/pretrain_learned/{{retrain}}/seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/pretrain_learned/{{retrain}}/seed{{seed}}.tsv"
    threads: resource("pretrain_learned", "threads")
    resources:
        **training_resources("pretrain_learned"),
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} -m sparsebert pretrain --examples {params.examples} --tokenizer {input.tokenizer}"
        " --params {params.recipe:q} --mask learned --mask-file {input.mask}"
        " --out {params.out} --state-dir {params.state} > {log} 2>&1"
