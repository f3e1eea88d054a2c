#!/usr/bin/env bash
# benchmarks/gpu_physics.py on a lent GPU machine (PyTorch and JAX with CUDA, Python 3.12, no MuJoCo, no internet).
#
#   bash benchmarks/device/gpu_physics.sh --fetch    # here: the wheels it lacks into wheels/ (git-ignored, ~31 MB)
#   bash benchmarks/device/gpu_physics.sh            # there (run with carry: ["wheels"]): install them, measure,
#                                                    # and write the table to $OUT/gpu_physics.{json,md}
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=wheels
if [ "${1:-}" = "--fetch" ]; then
    # pure-Python wheels and the CPython 3.12 manylinux builds of MuJoCo; each without its dependencies (the
    # device machine has numpy, torch and jax; these are the rest that metarl's sampler and trainer import)
    python -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$WHEELS" mujoco==4.0.1 mujoco-core==4.0.1 mujoco-mjx==3.17.0 glfw pyopengl gymnasium cloudpickle \
        farama-notifications pyyaml trimesh "etils[epath]" absl-py
    du -sh "$WHEELS"
    exit 0
fi
python -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
python -m pip install --quiet --no-deps --no-build-isolation -e .
python -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, torch.cuda.get_device_name())"
python -m pytest -q -p no:xdist -o addopts="" tests/test_mjx.py -k on_a_gpu   # the episodes stay on the GPU
python benchmarks/gpu_physics.py --out "${OUT:-benchmarks/results/speed}/gpu_physics"
