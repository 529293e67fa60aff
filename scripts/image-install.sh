#!/bin/sh
# Installs RouteIQ with the given extras into /opt/venv: the install step of Dockerfile.gateway and
# Dockerfile.operator (their builder stage runs it from /src, which holds pyproject.toml, README.md
# and the sources).
#
#   image-install.sh EXTRAS          e.g. image-install.sh gateway,ml
#
# WHEELHOUSE (optional): a directory made by scripts/wheelhouse.py for these extras. When set,
# nothing is fetched: every distribution comes from it and is checked against its lock's hashes
# (the build can run with no network at all). When unset, pip uses the package index; torch, when
# the extras need it, comes from TORCH_INDEX_URL (PyTorch's CPU-only index by default: PyPI's torch
# is the CUDA build, several GB).
#
# /opt/build holds the build tools (pip, hatchling) and never reaches the runtime image; /opt/venv
# gets RouteIQ and its dependencies, and no pip.
set -eu

extras=${1:?usage: image-install.sh EXTRAS (comma-separated, e.g. gateway,ml)}
wheelhouse=${WHEELHOUSE:-}
torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
torch_version=${TORCH_VERSION:-2.13.0}

if [ -n "$wheelhouse" ]; then
    for lock in build-requirements.txt requirements.txt; do
        [ -f "$wheelhouse/$lock" ] || { echo "image-install: $wheelhouse/$lock is missing (make it with scripts/wheelhouse.py --extras $extras)" >&2; exit 1; }
    done
fi

python3 -m venv /opt/build
python3 -m venv --without-pip /opt/venv
pip() { /opt/build/bin/python -m pip --disable-pip-version-check --no-cache-dir "$@"; }
into_venv() { pip --python /opt/venv/bin/python "$@"; }

if [ -n "$wheelhouse" ]; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheelhouse"
    pip install --require-hashes -r "$wheelhouse/build-requirements.txt"
else
    pip install pip==26.3 hatchling==1.33.0
fi

# RouteIQ's wheel from these sources, with the build tools pinned in pyproject.toml's [build-system]
pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .
set -- /wheels/routeiq-*.whl
wheel=$1

if [ -n "$wheelhouse" ]; then
    # every dependency exactly as locked (name, version and sha256)
    into_venv install --require-hashes -r "$wheelhouse/requirements.txt"
else
    case ",$extras," in
        *,ml,*) into_venv install --index-url "$torch_index" "torch==$torch_version" ;;
    esac
fi
# resolves routeiq[extras] against what is installed (from the wheelhouse: nothing more may be missing)
into_venv install "routeiq[$extras] @ file://$wheel"
into_venv check
/opt/venv/bin/routeiq version
