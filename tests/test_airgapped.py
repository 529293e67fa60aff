"""The air-gapped install of docs/air-gapped.md, for real.

A wheelhouse made by `scripts/wheelhouse.py --extras operator` (the smallest one) installs RouteIQ
into a fresh virtual environment inside a new network namespace: no interface but a loopback that
is down, so nothing can be fetched. pip runs with no configuration file and no `PIP_*` variable
(this machine's pip configuration names local package indexes and find-links directories that a
network namespace does not hide), so every wheel must come from the wheelhouse. Then `routeiq
version` and `routeiq crds` run from that environment, in the namespace too.

A copy of the wheelhouse with one byte changed in one wheel (a dependency's, or RouteIQ's own) is
refused by `--require-hashes`, with pip's error naming the file and both hashes, and nothing from
it is installed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = "operator"
# pip's refusal when a file's sha256 is not the one the requirements file pins
HASH_MISMATCH = "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE"
# the wheelhouse build may fetch from the package index (usually pip's cache answers); the installs
# take seconds each
pytestmark = pytest.mark.timeout(420)


def _namespace_command() -> list[str] | None:
    """`unshare --net` (root), else `unshare -rn` (an unprivileged user namespace), whichever runs here."""
    if shutil.which("unshare") is None:
        return None
    for command in (["unshare", "--net"], ["unshare", "-rn"]):
        probe = subprocess.run([*command, "true"], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return command
    return None


UNSHARE = _namespace_command()
needs_namespace = pytest.mark.skipif(
    UNSHARE is None,
    reason="needs a new network namespace: `unshare --net` (root) or `unshare -rn` (user namespaces)",
)


def _offline_environment() -> dict[str, str]:
    """This environment without pip's configuration: no config file, no PIP_* variable, no venv."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PIP_") and key not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    environment |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return environment


def _offline(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `command` in a new network namespace (only a loopback, down)."""
    assert UNSHARE is not None
    return subprocess.run(
        [*UNSHARE, *command],
        cwd=cwd,
        env=_offline_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment (its pip from Python's bundled ensurepip wheel); its python."""
    result = _offline([sys.executable, "-m", "venv", str(path)], cwd=path.parent, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return path / "bin" / "python"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _locked(lock: Path) -> dict[str, str]:
    """name==version -> sha256, from a lock scripts/wheelhouse.py wrote."""
    pins = {}
    for line in lock.read_text().splitlines():
        pin, _, digest = line.partition(" --hash=sha256:")
        pins[pin] = digest
    return pins


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("airgapped") / "wheelhouse"
    result = subprocess.run(
        [sys.executable, "scripts/wheelhouse.py", "--extras", EXTRAS, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def _installed_from(output: str, cwd: Path) -> set[Path]:
    """The files pip says it processed ("Processing ./x.whl (from -r ...)"), resolved."""
    return {
        (cwd / match).resolve() for match in re.findall(r"^Processing (\S+\.whl)", output, flags=re.MULTILINE)
    }


@needs_namespace
def test_network_namespace_reaches_nothing(tmp_path: Path) -> None:
    # what the install below runs in: not even the loopback is up
    probe = (
        "import socket\n"
        "for address in (('127.0.0.1', 9), ('10.255.255.1', 443), ('1.1.1.1', 443)):\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=5).close()\n"
        "        print('connected', address)\n"
        "    except OSError as error:\n"
        "        print('refused', error.errno)\n"
    )
    result = _offline([sys.executable, "-c", probe], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:3] == [f"refused {errno.ENETUNREACH}"] * 3, result.stdout


@needs_namespace
def test_routeiq_installs_from_the_wheelhouse_with_no_network(wheelhouse: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip"]
    locks = ("build-requirements.txt", "requirements.txt")
    processed: set[Path] = set()
    # the commands of docs/air-gapped.md, run from the wheelhouse directory
    for lock in locks:
        install = [*pip, "install", "--no-index", "--find-links", ".", "--require-hashes", "-r", lock]
        result = _offline(install, cwd=wheelhouse)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        processed |= _installed_from(result.stdout, wheelhouse)
    own = [*pip, "install", "--no-index", "--no-deps", "--require-hashes", "-r", "routeiq.txt"]
    result = _offline(own, cwd=wheelhouse)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    processed |= _installed_from(result.stdout, wheelhouse)

    # every locked wheel, and RouteIQ's, was installed, and only from the wheelhouse
    wheel_name, _, _ = (wheelhouse / "routeiq.txt").read_text().partition(" ")
    wheels = {path.resolve() for path in wheelhouse.glob("*.whl")}
    assert processed == wheels
    assert len(processed) == sum(len(_locked(wheelhouse / lock)) for lock in locks) + 1

    check = _offline([*pip, "check"], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr

    routeiq = str(tmp_path / "venv" / "bin" / "routeiq")
    version = _offline([routeiq, "version"], cwd=tmp_path, timeout=60)
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.strip() == wheel_name.split("-")[1]

    crds = _offline([routeiq, "crds", "--out", str(tmp_path / "crds")], cwd=tmp_path, timeout=60)
    assert crds.returncode == 0, crds.stderr[-2000:]
    written = {path.name: path.read_text() for path in (tmp_path / "crds").glob("*.yaml")}
    expected = {path.name: path.read_text() for path in (ROOT / "crds").glob("routeiq.io_*.yaml")}
    assert written == expected


def _tampered_copy(wheelhouse: Path, target: Path, wheel: str) -> Path:
    """The wheelhouse linked into `target`, with one byte of `wheel` changed (in a file of its own)."""
    shutil.copytree(wheelhouse, target, copy_function=os.link)
    path = target / wheel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()  # the link: the original keeps its bytes
    path.write_bytes(bytes(data))
    return path


@needs_namespace
@pytest.mark.parametrize("which", ["dependency", "routeiq"])
def test_a_tampered_wheel_is_refused_by_its_hash(wheelhouse: Path, tmp_path: Path, which: str) -> None:
    if which == "dependency":
        wheel = next(wheelhouse.glob("kopf-*.whl")).name
        pin = next(pin for pin in _locked(wheelhouse / "requirements.txt") if pin.startswith("kopf=="))
        expected = _locked(wheelhouse / "requirements.txt")[pin]
        lock, options, package = "requirements.txt", [], "kopf"
    else:
        wheel, _, digest = (wheelhouse / "routeiq.txt").read_text().strip().partition(" --hash=sha256:")
        expected, lock, options, package = digest, "routeiq.txt", ["--no-deps"], "routeiq_router"
    assert _sha256(wheelhouse / wheel) == expected

    copy = tmp_path / "wheelhouse"
    tampered = _tampered_copy(wheelhouse, copy, wheel)
    assert _sha256(wheelhouse / wheel) == expected
    python = _fresh_venv(tmp_path / "venv")
    install = [str(python), "-m", "pip", "install", "--no-index", "--find-links", "."]
    result = _offline([*install, *options, "--require-hashes", "-r", lock], cwd=copy)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert HASH_MISMATCH in output, output[-3000:]
    assert wheel in output
    assert f"Expected sha256 {expected}" in output
    assert re.search(rf"Got +{_sha256(tampered)}", output), output[-3000:]
    assert not list((tmp_path / "venv" / "lib").glob(f"python3*/site-packages/{package}")), "installed anyway"
