#!/usr/bin/env bash
# Build the separate interpreter that benchmarks/ntk.py --nt-python runs neural-tangents in.
#
#     bash benchmarks/nt_env.sh [DIR]          # default DIR=/work/nt-env (outside the repository)
#     python benchmarks/ntk.py --nt-python DIR/bin/python
#
# Pins (issue 26): neural-tangents 0.6.5 imports only with jax <= 0.4.25, and jax 0.4.26-0.4.30
# break its implementation 3 (structured derivatives); numpy < 2 for that jax; tf2jax and
# ml_dtypes pinned so pip does not pull versions that need a newer jax. CPU jaxlib; for a GPU,
# install the matching "jax[cuda12]" wheel of 0.4.25 instead (not tried here: no GPU).
set -euo pipefail
DIR="${1:-/work/nt-env}"
python3 -m venv "$DIR"
"$DIR/bin/pip" install -q --upgrade pip
"$DIR/bin/pip" install -q neural-tangents==0.6.5 jax==0.4.25 jaxlib==0.4.25 'numpy<2' \
    tf2jax==0.3.6 ml_dtypes==0.5.1
"$DIR/bin/python" -c "import jax, neural_tangents as nt; print('jax', jax.__version__, 'neural-tangents', nt.__version__)"
