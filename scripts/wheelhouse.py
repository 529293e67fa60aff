#!/usr/bin/env python3
"""Make a wheelhouse: every wheel RouteIQ needs, and a lock with their hashes, for offline installs.

    python3 scripts/wheelhouse.py --extras gateway --out wheelhouse/gateway

writes into OUT:

- a wheel for every distribution `routeiq[EXTRAS]` installs (sdists are built into wheels here, so
  the offline side needs no compiler), RouteIQ's own wheel built from this tree, and the build tools
  the Dockerfiles' builder stage installs (pip, hatchling and what hatchling needs);
- `requirements.txt`: `name==version --hash=sha256:...` for each of them but RouteIQ's own wheel,
  for `pip install --no-index --find-links OUT --require-hashes -r OUT/requirements.txt`;
- `build-requirements.txt`: the same for the build tools;
- `routeiq.txt`: the file name and hash of RouteIQ's wheel (it changes with every commit).

On the offline side (a machine, or an image build with `--network none`):

    pip install --no-index --find-links OUT --require-hashes -r OUT/requirements.txt
    pip install --no-index --no-deps OUT/routeiq-*.whl

Run it with a Python of the release line the wheels are for (3.11 on Linux x86_64 or aarch64,
glibc): wheels are platform-specific. Dependencies that only older 3.11 releases need (by their
markers) are added too, so the wheelhouse serves any CPython 3.11, Debian bookworm's 3.11.2
included. It needs the package index (and pip's configured find-links, where this
machine keeps its CPU build of torch) once; with `--reuse`, distributions already in OUT are not
fetched again when pyproject.toml has not changed since OUT was made.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the Dockerfiles' builder stage: pip itself, and hatchling to build RouteIQ's wheel without isolation
BUILD_TOOLS = ("pip==26.3", "hatchling==1.33.0")
STAMP = ".pyproject.sha256"
OLDEST_PYTHON = "3.11.0"  # the wheelhouse serves every CPython 3.11 release from this one on
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    subprocess.run(command, check=True, cwd=ROOT)


def _lock(wheels: list[Path]) -> str:
    lines = []
    for wheel in sorted(wheels, key=lambda path: path.name.lower()):
        match = _WHEEL.match(wheel.name)
        if match is None:
            raise SystemExit(f"wheelhouse: {wheel.name} is not a wheel file name")
        name, version = match["name"].replace("_", "-").lower(), match["version"]
        lines.append(f"{name}=={version} --hash=sha256:{_sha256(wheel)}")
    return "\n".join(lines) + "\n"


def _requirements_of(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(archive.read(name).decode()).get_all("Requires-Dist") or []


def _marker_only(deps: Path) -> list[str]:
    """Requirements that the wheels in `deps` need on an older CPython 3.11 release than this one
    (e.g. `async-timeout; python_full_version < "3.11.3"`, which Debian bookworm's 3.11.2 needs)
    and that no wheel here provides."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have = {canonicalize_name(_WHEEL.match(w.name)["name"]) for w in deps.glob("*.whl")}  # type: ignore[index]
    older = {"python_full_version": OLDEST_PYTHON, "python_version": "3.11"}
    missing: dict[str, str] = {}
    for wheel in deps.glob("*.whl"):
        for text in _requirements_of(wheel):
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or "extra" in str(marker) or not marker.evaluate(older) or marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            if name not in have:
                missing[name] = f"{name}{requirement.specifier}"
    return sorted(missing.values())


def _wheels_in(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.whl")}


def build(extras: str, out: Path, reuse: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pyproject = _sha256(ROOT / "pyproject.toml")
    stamp = out / STAMP
    fresh = reuse and stamp.is_file() and stamp.read_text().strip() == f"{pyproject} {extras}"
    with tempfile.TemporaryDirectory(prefix="routeiq-wheelhouse-") as scratch:
        own = Path(scratch) / "own"
        # RouteIQ's wheel from this tree (hatchling from the index, in pip's build isolation)
        _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(own), str(ROOT))
        (routeiq,) = own.glob("routeiq-*.whl")
        if not fresh:
            deps = Path(scratch) / "deps"
            tools = Path(scratch) / "tools"
            # `pip wheel` downloads wheels as they are and builds the sdists; the extras' pins decide
            # every version (pyproject.toml pins them all)
            _pip("wheel", "--quiet", "--wheel-dir", str(deps), f"routeiq[{extras}] @ {routeiq.as_uri()}")
            _pip("wheel", "--quiet", "--wheel-dir", str(tools), *BUILD_TOOLS)
            # with the extras' markers evaluated for older 3.11 releases too, so the offline side may
            # run any CPython 3.11 (a wheel's METADATA marker `python_full_version < "3.11.3"`)
            while extra := _marker_only(deps):
                _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(deps), *extra)
            (deps / routeiq.name).unlink()
            # only now that everything was fetched: a failed run (e.g. offline, with a stale OUT)
            # leaves OUT as it was
            for old in out.glob("*.whl"):
                old.unlink()
            for wheel in [*deps.glob("*.whl"), *tools.glob("*.whl")]:
                shutil.copy2(wheel, out / wheel.name)
            (out / "requirements.txt").write_text(_lock(sorted(deps.glob("*.whl"))))
            (out / "build-requirements.txt").write_text(_lock(sorted(tools.glob("*.whl"))))
        for old in out.glob("routeiq-*.whl"):
            old.unlink()
        shutil.copy2(routeiq, out / routeiq.name)
    (out / "routeiq.txt").write_text(f"{routeiq.name} --hash=sha256:{_sha256(out / routeiq.name)}\n")
    stamp.write_text(f"{pyproject} {extras}\n")
    locked = {line.split("==")[0] for line in (out / "requirements.txt").read_text().splitlines()}
    print(f"wheelhouse: {out}: {len(_wheels_in(out))} wheels, {len(locked)} locked for routeiq[{extras}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/wheelhouse.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--extras", default="gateway", help="RouteIQ's extras, comma-separated (default: gateway)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the wheelhouse directory (created)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the dependencies' wheels when pyproject.toml and the extras are unchanged "
        "(RouteIQ's own wheel is always rebuilt)",
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*(,[a-z0-9][a-z0-9-]*)*", args.extras):
        parser.error(f"--extras {args.extras!r}: comma-separated extra names, e.g. gateway,ml")
    build(args.extras, args.out.resolve(), args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
