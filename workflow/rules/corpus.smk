# Data: corpus -> tokenizer -> MLM+NSP examples, and the proxy downstream tasks (embedded default only).
# The corpus and the examples fan out over `corpus.shards` shard jobs (one CPU each: locally as many run side by
# side as --cores allows, on SLURM each is its own job), each followed by a merge that writes stats.json.


rule corpus_shard:
    output:
        text=f"{DATA}/corpus/{{shard}}.txt",
        counts=f"{DATA}/corpus/{{shard}}.json",
    params:
        corpus=as_json(config["corpus"]),
        index=lambda wc: shard_index(wc.shard),
        out=lambda wc, output: parent(output.text),
    log:
        f"{LOGS}/corpus/{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmarks/corpus/{{shard}}.tsv"
    threads: 1
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert corpus --params {params.corpus:q} --shard {params.index} --threads {threads}"
        " --out {params.out} > {log} 2>&1"


rule corpus:
    input:
        expand(f"{DATA}/corpus/{{shard}}.{{ext}}", shard=SHARDS, ext=["txt", "json"]),
    output:
        f"{DATA}/corpus/stats.json",
    params:
        corpus=as_json(config["corpus"]),
        out=lambda wc, output: parent(output[0]),
    log:
        f"{LOGS}/corpus/merge.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert corpus --params {params.corpus:q} --merge --out {params.out} > {log} 2>&1"


rule tokenizer:
    input:
        corpus=rules.corpus.output[0],
    output:
        directory(f"{DATA}/tokenizer"),
    params:
        tokenizer=as_json(config["tokenizer"]),
        corpus=lambda wc, input: parent(input.corpus),
    log:
        f"{LOGS}/tokenizer.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert tokenizer --corpus {params.corpus} --params {params.tokenizer:q} --out {output} > {log} 2>&1"


rule examples_shard:
    input:
        corpus=rules.corpus.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        directory(f"{DATA}/examples/{{shard}}"),
    params:
        examples=as_json(config["examples"]),
        corpus=lambda wc, input: parent(input.corpus),
        out=lambda wc, output: parent(output[0]),
    log:
        f"{LOGS}/examples/{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmarks/examples/{{shard}}.tsv"
    threads: 1
    conda:
        "../../envs/train.yaml"
    shell:
        # RAYON_NUM_THREADS: the HF tokenizer's own thread pool, else it takes every core of the node.
        "RAYON_NUM_THREADS={threads} python -m sparsebert examples --corpus {params.corpus} --tokenizer {input.tokenizer}"
        " --shard {wildcards.shard}"
        " --params {params.examples:q} --out {params.out} > {log} 2>&1"


rule examples:
    input:
        corpus=rules.corpus.output[0],
        tokenizer=rules.tokenizer.output[0],
        shards=expand(f"{DATA}/examples/{{shard}}", shard=SHARDS),
    output:
        f"{DATA}/examples/stats.json",
    params:
        examples=as_json(config["examples"]),
        corpus=lambda wc, input: parent(input.corpus),
        out=lambda wc, output: parent(output[0]),
    log:
        f"{LOGS}/examples/merge.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert examples --corpus {params.corpus} --tokenizer {input.tokenizer} --merge"
        " --params {params.examples:q} --out {params.out} > {log} 2>&1"


# PROXY tasks: built from the corpus (held-out documents for dev), one folder per configured task.
rule proxy_tasks:
    input:
        corpus=rules.corpus.output[0],
    output:
        [directory(f"{DATA}/tasks/{task}") for task in PROXY_TASKS],
    params:
        proxy=as_json(config.get("proxy_tasks", {})),
        corpus=lambda wc, input: parent(input.corpus),
        tasks=PROXY_TASKS,
        out=lambda wc, output: parent(output[0]),
    log:
        f"{LOGS}/proxy_tasks.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert proxy-tasks --corpus {params.corpus} --params {params.proxy:q}"
        " --tasks {params.tasks} --out {params.out} > {log} 2>&1"
