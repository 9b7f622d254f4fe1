# Fine-tuning: every pretrained variant x seed x every task, with one shared recipe and per-task overrides
# (`finetune.per_task`, e.g. SQuAD's length 384 in config/paper.yaml). The fine-tuning seed is the task's own
# (`finetune.seed`), the same for every variant and pretraining seed: all of them see the same training and
# eval examples, so the report can pair them on the eval examples.
# `tasks.jobs` decides how the work is cut into jobs, never what a job computes: `per_task` (one job per
# variant x seed x task: the paper's GPU jobs, each its own resources) or `per_model` (one job per variant x
# seed fine-tunes every task in turn, in one process: small models, on the CPU or one GPU, where a job's
# start-up is a third of its time). Both write the same files (results/<run>/finetune/<variant>/seed<N>/<task>/).


if config["tasks"].get("jobs", "per_task") == "per_task":

    rule finetune:
        input:
            unpack(finetune_inputs),
            task=finetune_task_input,
        output:
            metrics=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/metrics.json",
            predictions=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/predictions.json",
            log=f"{RESULTS}/finetune/{{variant}}/seed{{seed}}/{{task}}/log.jsonl",
        params:
            launch=launch,
            recipe=lambda wc: as_json(finetune_recipe(wc.task)),
            mask_file=mask_file_option,
            source=lambda wc: as_json(task_source(wc.task)),
            out=lambda wc, output: parent(output.metrics),
            state=lambda wc, output: state_dir(parent(output.metrics)),
        log:
            f"{LOGS}/finetune/{{variant}}/seed{{seed}}/{{task}}.log",
        benchmark:
            f"{LOGS}/benchmarks/finetune/{{variant}}/seed{{seed}}/{{task}}.tsv"
        threads: resource("finetune", "threads")
        resources:
            **training_resources("finetune"),
        conda:
            "../../envs/train.yaml"
        shell:
            "{params.launch} -m sparsebert finetune --model {input.model} --tokenizer {input.tokenizer}"
            " --task {wildcards.task} --task-source {params.source:q} --params {params.recipe:q} {params.mask_file}"
            " --out {params.out} --state-dir {params.state} > {log} 2>&1"

else:

    rule finetune_model:
        input:
            unpack(finetune_inputs),
            tasks=lambda wc: [f"{DATA}/tasks/{task}" for task in TASKS] if PROXY else [],
        output:
            # One job, every task's files: the same paths as `finetune` writes.
            metrics=expand(f"{RESULTS}/finetune/{{{{variant}}}}/seed{{{{seed}}}}/{{task}}/metrics.json", task=TASKS),
            predictions=expand(f"{RESULTS}/finetune/{{{{variant}}}}/seed{{{{seed}}}}/{{task}}/predictions.json", task=TASKS),
            log=expand(f"{RESULTS}/finetune/{{{{variant}}}}/seed{{{{seed}}}}/{{task}}/log.jsonl", task=TASKS),
        params:
            launch=launch,
            tasks=lambda wc: as_json({task: {"source": task_source(task), "params": finetune_recipe(task)}
                                      for task in TASKS}),
            mask_file=mask_file_option,
            out=lambda wc: f"{RESULTS}/finetune/{wc.variant}/seed{wc.seed}",
            state=lambda wc: state_dir(f"{RESULTS}/finetune/{wc.variant}/seed{wc.seed}"),
        log:
            f"{LOGS}/finetune/{{variant}}/seed{{seed}}.log",
        benchmark:
            f"{LOGS}/benchmarks/finetune/{{variant}}/seed{{seed}}.tsv"
        threads: resource("finetune", "threads")
        resources:
            **training_resources("finetune"),
        conda:
            "../../envs/train.yaml"
        shell:
            "{params.launch} -m sparsebert finetune --model {input.model} --tokenizer {input.tokenizer}"
            " --tasks {params.tasks:q} {params.mask_file} --out {params.out} --state-dir {params.state} > {log} 2>&1"
