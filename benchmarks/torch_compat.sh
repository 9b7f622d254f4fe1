#!/usr/bin/env bash
# The test suite under another torch than the pin, on this CPU: the torch a GPU box has (2.11 on the lent H200)
# differs in API (create_block_mask's `separate_full_blocks`, for one), and a GPU session has minutes, not hours,
# to find that out. Not in CI: PyPI's Linux torch is the CUDA build (about 4.7 GB with its NVIDIA libraries,
# which it needs to import even on a machine without a GPU).
#
#   bash benchmarks/torch_compat.sh 2.11.0 [PYTEST_ARGS...]      after `make install`; default args: -m "not slow"
#
# .venv-torch-<version>/ holds only that torch; every other package comes from the project's .venv (a .pth file
# adds its site-packages after the venv's own, so this torch wins). `snakemake` and `dvc` there are wrappers that
# run them with this venv's python, since the tests call them beside sys.executable.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: bash benchmarks/torch_compat.sh TORCH_VERSION [PYTEST_ARGS...]}
shift
venv=.venv-torch-$version
[ -x .venv/bin/python ] || { echo "run 'make install' first: the other packages come from .venv" >&2; exit 2; }

if [ ! -f "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==$version"
  project=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  own=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "import site; site.addsitedir('$project')" > "$own/zz_project_venv.pth"
  for tool in snakemake dvc; do
    printf '#!/bin/sh\nexec "%s" -m %s "$@"\n' "$PWD/$venv/bin/python" "$tool" > "$venv/bin/$tool"
    chmod +x "$venv/bin/$tool"
  done
  touch "$venv/.installed"
fi

"$venv/bin/python" -c "import torch, transformers; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| from', torch.__file__)"
[ $# -gt 0 ] || set -- -m "not slow"
PATH="$PWD/$venv/bin:$PATH" exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
