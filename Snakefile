# SparseBERT reproduction DAG (Shi et al., ICML 2021): corpus -> tokenizer -> examples -> pretrain per mask
# variant x seed (fixed masks; DAM search -> learned mask -> retrain) -> fine-tune per variant x seed x task ->
# tables, figures, findings (effect sizes with 95 % intervals over seeds and eval examples). Every rule is one `python -m sparsebert <subcommand>` call.
#
#   snakemake --cores all                                   embedded default (config/config.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml      CI-sized
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
#   snakemake --cores 1 --forcerun figures figures          redo the figures from results/<run>/
#
# Every run writes under data/<run>/, results/<run>/ and logs/<run>/ (config `run`; config/config.yaml: default,
# smoke.yaml: smoke, paper.yaml: paper), so the runs of different configs sit side by side in one clone.

from snakemake.utils import min_version

from sparsebert.validate import check_run

# 9.17: Snakemake 9.10 to 9.16 gave back the cores of a job that was the only one ready without having taken
# them (snakemake#3815), so each lone job (corpus, examples, ...) raised the cores on offer: `--cores 2` started
# six training jobs at once. tests/test_workflow.py replays the smoke run's log to check the sum of threads.
min_version("9.17")


# The embedded default, unless --configfile names another: Snakemake would otherwise merge the two, and a
# smoke run would inherit keys it does not set, such as the default's blockwise mask and tasks.jobs.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# First thing: a wrong key or value stops the run here, before any job, one line per problem naming the key.
# The config against workflow/schemas/config.schema.yaml (the same definitions that every subcommand checks
# its --params against; the config is left as written, each subcommand fills its defaults), then what a
# schema cannot say (mask parameters by their builders, tasks vs their source, model shape vs lengths, the
# batch split over the processes the resources start, ...).
check_run(config, workflow)


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/dam.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


# The checkpoints are deliverables too (DVC versions them): asking for them here means that a deleted
# checkpoint is rebuilt (with its fine-tunings) even though the tables downstream are still present.
CHECKPOINTS = [f"{pretrained_dir(variant, seed)}/model" for variant in VARIANTS for seed in SEEDS]


rule all:
    input:
        CHECKPOINTS,
        rules.tables.output,
        rules.figures.output,
        rules.findings.output,
    default_target: True


rule pretrain_all:
    input:
        CHECKPOINTS,
        [f"{pretrained_dir(variant, seed)}/summary.json" for variant in VARIANTS for seed in SEEDS],


rule finetune_all:
    input:
        [f"{finetuned_dir(v, s, t)}/metrics.json" for v in VARIANTS for s in SEEDS for t in TASKS],
