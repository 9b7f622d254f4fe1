#!/usr/bin/env bash
# The lent GPU machine's calls, rehearsed on this CPU: `benchmarks/gpu_demo.sh run` on config/gpu.yaml's DAG shrunk
# to toy sizes (once stopped by a 45 s budget, then resumed), then `gpu_demo.sh bench --toy` (benchmarks/gpu.py),
# in a copy of what the device receives (the tracked and untracked-not-ignored files), with the device's package
# versions, without network, and with nothing on PATH but a python3 that lacks snakemake. A device session has 15
# minutes; a wheel missing from .whl, an API that moved in the device's transformers, or a job that fails on a
# one-GPU machine should cost 3 minutes here instead. Not in CI (it installs a 4.6 GB torch).
#
#   bash benchmarks/device_rehearsal.sh            after `make install`, `bash ../shared/tools/device-wheels.sh .whl`
#                                                  and `VENV_PYTHON=.venv/bin/python bash benchmarks/gpu_demo.sh pack`
#   bash benchmarks/device_rehearsal.sh tests [PYTEST_ARGS...]    the test suite under the same packages instead
#
# The device's packages (the lent H200's image as read by the team in 2026-11): Python 3.12.3, torch 2.11.0+cu130,
# transformers 5.17.0, tokenizers 0.23.2, huggingface_hub 1.33.0, safetensors 0.8.0, numpy 2.5.2; the other
# packages that the carried wheels need and do not carry are there at versions nobody recorded (newest here).
# What this cannot rehearse: CUDA (SPARSEBERT_GPUS=1 makes the launcher hand out one GPU slot, and torch then finds
# none), Python 3.12 (Debian 12 has 3.11: the carried wheels that are built per Python are fetched again for this
# one) and with it numpy 2.5 (3.12 and later; the newest for 3.11 instead).
#
# Settings (environment): WHEELS (.whl), WORK (/tmp/sparsebert-rehearsal: the tree, wheels, site and $OUT),
# VENV (.venv-device; built once, from .venv-torch-2.11.0 by hard links when benchmarks/torch_compat.sh made it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=$(realpath -m "${WHEELS:-.whl}")
WORK=${WORK:-/tmp/sparsebert-rehearsal}
VENV=$ROOT/${VENV:-.venv-device}
TORCH=2.11.0
PINS="transformers==5.17.0 tokenizers==0.23.2 huggingface_hub==1.33.0 safetensors==0.8.0"
EXTRA="numpy pandas matplotlib scipy scikit-learn pyarrow pyyaml tqdm pytest pytest-timeout hypothesis"

compgen -G "$WHEELS/*.whl" > /dev/null && [ -f "$WHEELS/embedded_corpus.tar.gz" ] \
  || { echo "no wheels or corpus in $WHEELS: see the usage at the top of $0" >&2; exit 2; }

# What the carried wheels require and do not carry: the device must have it, so the rehearsal installs it.
wheel_needs() {
  python3 - "$WHEELS" <<'PY'
import re, sys, zipfile
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
carried, needs = set(), set()
for wheel in Path(sys.argv[1]).glob("*.whl"):
    carried.add(norm(wheel.name.split("-")[0]))
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                needs.add(norm(re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip(), maxsplit=1)[0]))
print(" ".join(sorted(needs - carried - {"torch"})))
PY
}

# pip, without the warnings of this machine's pip config about index folders that do not exist
pip_here() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

build_venv() {
  [ -f "$VENV/.device" ] && return
  rm -rf "$VENV"
  if [ -f ".venv-torch-$TORCH/.installed" ]; then
    cp -al ".venv-torch-$TORCH" "$VENV"  # hard links: seconds, no second 4.6 GB
    rm -f "$VENV"/lib/python3*/site-packages/zz_project_venv.pth "$VENV/.installed" "$VENV/bin/snakemake" \
      "$VENV/bin/dvc"  # torch_compat.sh's bridge to the project venv: the device has no such thing
  else
    python3 -m venv "$VENV"
    pip_here install -q "torch==$TORCH"
  fi
  # shellcheck disable=SC2046,SC2086
  pip_here install -q $PINS $EXTRA $(wheel_needs)
  touch "$VENV/.device"
}

# The carried wheels, with those built for one Python (cp312 on the device) fetched again for this one.
wheels_here() {
  rm -rf "$WORK/wheels" && mkdir -p "$WORK/wheels"
  cp "$WHEELS/embedded_corpus.tar.gz" "$WORK/wheels/"
  local w name version
  for w in "$WHEELS"/*.whl; do
    case $(basename "$w") in
      *-py3-none-any.whl | *-py2.py3-none-any.whl) cp "$w" "$WORK/wheels/" ;;
      *)
        name=$(basename "$w" | cut -d- -f1) version=$(basename "$w" | cut -d- -f2)
        pip_here download -q --no-deps --only-binary=:all: -d "$WORK/wheels" "$name==$version" ;;
    esac
  done
}

# What the device receives: the tracked files and the untracked ones git does not ignore.
device_tree() {
  rm -rf "$WORK/tree" && mkdir -p "$WORK/tree"
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf - 2> /dev/null | tar -xf - -C "$WORK/tree"
}

# config/gpu.yaml's DAG (its variants, DAM types, tasks, per_model fine-tuning and GPU slots) at toy sizes.
toy_config() {
  "$VENV/bin/python" - "$WORK/tree/config/gpu.yaml" "$WORK/tree/config/rehearsal.yaml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c.update(run="rehearsal", seeds=[0, 1], tokenizer={"vocab_size": 1000},
         scale="device rehearsal: config/gpu.yaml's DAG at toy sizes on a CPU; numbers are meaningless",
         corpus={"source": "embedded", "shards": 2, "embedded": {"sources": ["lee", "wikipedia"], "max_words": 60000}},
         examples={"max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 1},
         proxy_tasks={"train_examples": 100, "dev_examples": 40, "qa_context_words": 28, "max_words": 14})
c["report"]["bootstrap_samples"] = 100
c["pretrain"].update(model={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                            "intermediate_size": 64},
                     batch_size=8, max_steps=12, checkpoint_every=6, log_every=3, eval_examples=32)
c["dam_search"].update(max_steps=8, snapshot_every=2, checkpoint_every=4)
c["masks"] = {name: ({"block": 4} if name == "blockwise" else params) for name, params in c["masks"].items()}
c["finetune"].update(max_seq_length=32, doc_stride=16, max_query_length=8, batch_size=8, epochs=1,
                     max_train_examples=48, max_eval_examples=32,
                     per_task={"proxy_qa": {"max_train_examples": 48, "max_answer_length": 16}})
yaml.safe_dump(c, open(sys.argv[2], "w"), sort_keys=False)
PY
}

# Only the venv's bin (python3 without snakemake) and the system's on PATH; no network for the hub.
device_env() {
  env -i HOME="$HOME" LANG=C.UTF-8 PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" HF_HUB_OFFLINE=1 "$@"
}

build_venv
wheels_here
device_tree
cd "$WORK/tree"
if [ "${1:-}" = tests ]; then
  shift
  rm -rf "$WORK/site"
  pip_here install -q --no-index --no-deps --target "$WORK/site" "$WORK"/wheels/*.whl
  tar -xzf "$WORK/wheels/embedded_corpus.tar.gz" -C "$WORK/site"
  [ $# -gt 0 ] || set -- -m "not slow"
  exec env -i HOME="$HOME" LANG=C.UTF-8 PATH="$WORK/site/bin:$VENV/bin:/usr/bin:/bin" HF_HUB_OFFLINE=1 \
    PYTHONPATH="$WORK/site:$PWD/src" "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
fi
toy_config
rm -rf "$WORK/site" "$WORK/out" "$WORK/out_cut" "$WORK/bench"
demo_run() {  # BUDGET_S, OUT
  device_env SPARSEBERT_GPUS=1 COMMIT="$(git -C "$ROOT" describe --always --dirty)" CONFIG=config/rehearsal.yaml \
    CORES=2 WHEELS="$WORK/wheels" SITE="$WORK/site" BUDGET_S="$1" OUT="$2" bash benchmarks/gpu_demo.sh run \
    > "$2.log" 2>&1
}
set +e
# A first call stopped by its budget (SIGTERM: training jobs checkpoint), then a second one that resumes it.
start=$(date +%s)
demo_run 45 "$WORK/out_cut"
rc=$?
echo "gpu_demo.sh run, 45 s budget: exit status $rc in $(($(date +%s) - start)) s; its output: $WORK/out_cut.log"
grep -E "^snakemake exit status|steps \(" "$WORK/out_cut/run_info.txt"
cut=0
[ $rc -eq 124 ] && [ -f "$WORK/out_cut/rehearsal.tar.gz" ] || { echo "the budget did not stop it as planned" >&2; cut=1; }
start=$(date +%s)
demo_run 900 "$WORK/out"
rc=$((cut + $?))
echo "gpu_demo.sh run, resumed: exit status $rc in $(($(date +%s) - start)) s; its output: $WORK/out.log"
ls -l "$WORK/out"
grep -E "steps \([0-9]+%\) done" "$WORK/out/snakemake.log" | tail -n 1
grep -q "^## " "$WORK/out/findings.md" 2>/dev/null || { echo "no findings.md came back" >&2; rc=1; }
# The second call: benchmarks/gpu.py at toy sizes, every section (flex too, which the default set leaves out);
# a section that breaks is recorded in its JSON, not raised.
start=$(date +%s)
device_env WHEELS="$WORK/wheels" SITE="$WORK/site" OUT="$WORK/bench" bash benchmarks/gpu_demo.sh bench --toy \
  --sections pretrain,dam_search,finetune,optimizer,pretrain_loop,profile,flex > "$WORK/bench.log" 2>&1 || rc=1
echo "gpu_demo.sh bench --toy: $(($(date +%s) - start)) s; its output: $WORK/bench.log"
if grep -n '"error"' "$WORK/bench/gpu.json" >&2; then
  echo "benchmarks/gpu.py: the sections above broke" >&2
  rc=1
fi
exit $rc
