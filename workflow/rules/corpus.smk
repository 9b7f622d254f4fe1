# Data: corpus -> tokenizer -> MLM+NSP examples, and the proxy downstream tasks (embedded default only).


rule corpus:
    output:
        directory(f"{DATA}/corpus"),
    params:
        corpus=as_json(config["corpus"]),
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{LOGS}/benchmarks/corpus.tsv"
    threads: 2
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert corpus --params {params.corpus:q} --out {output} > {log} 2>&1"


rule tokenizer:
    input:
        corpus=rules.corpus.output[0],
    output:
        directory(f"{DATA}/tokenizer"),
    params:
        tokenizer=as_json(config["tokenizer"]),
    log:
        f"{LOGS}/tokenizer.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert tokenizer --corpus {input.corpus} --params {params.tokenizer:q} --out {output} > {log} 2>&1"


rule examples:
    input:
        corpus=rules.corpus.output[0],
        tokenizer=rules.tokenizer.output[0],
    output:
        directory(f"{DATA}/examples"),
    params:
        examples=as_json(config["examples"]),
    log:
        f"{LOGS}/examples.log",
    benchmark:
        f"{LOGS}/benchmarks/examples.tsv"
    threads: 2
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert examples --corpus {input.corpus} --tokenizer {input.tokenizer}"
        " --params {params.examples:q} --out {output} > {log} 2>&1"


# PROXY tasks: built from the corpus (held-out documents for dev), one folder per configured task.
rule proxy_tasks:
    input:
        corpus=rules.corpus.output[0],
    output:
        [directory(f"{DATA}/tasks/{task}") for task in PROXY_TASKS],
    params:
        proxy=as_json(config.get("proxy_tasks", {})),
        tasks=PROXY_TASKS,
        out=lambda wc, output: parent(output[0]),
    log:
        f"{LOGS}/proxy_tasks.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m sparsebert proxy-tasks --corpus {input.corpus} --params {params.proxy:q}"
        " --tasks {params.tasks} --out {params.out} > {log} 2>&1"
