"""The GitHub Actions workflows in .github/workflows, checked offline.

Every workflow is validated against the GitHub workflow JSON schema that check-jsonschema vendors
(unknown keys, wrong types, misspelt `timeout-minutes`), and every `run:` step's shell goes through
ShellCheck as the runner runs it (bash), with `${{ }}` expressions masked the way actionlint masks
them. Beyond the syntax, the tests hold the workflows to what they are for: every job and step has
a timeout, the token is read-only, every action is pinned by commit, the CI workflow runs exactly
what .ci/run runs with the OS packages scripts/test needs, every path a workflow names exists, the
image builds only pass build arguments their Dockerfile declares, the images built are the ones
loaded into kind and named by the chart values, the chart accepts those values, the operator it
installs gives the smoke gateway the chart's gateway image, and the pytest step sets every variable
the e2e suite reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
E2E = WORKFLOWS / "e2e-kind.yml"
KIND_VALUES = ROOT / ".github" / "kind" / "values.yaml"
SMOKE_GATEWAY = ROOT / ".github" / "kind" / "smoke-gateway.yaml"
CHART = ROOT / "charts" / "routeiq-operator"
BIN = Path(sys.executable).parent
# GitHub's limit for one job is 6 hours; ours stay far below it (and CI's own 90 minutes)
MAX_JOB_MINUTES = 90

# What actionlint tells ShellCheck to ignore in run: scripts: sourced files it cannot follow, and
# the findings its `${{ }}` masking causes (constant conditions, unassigned variables that the
# runner sets).
SHELLCHECK_EXCLUDES = "SC1091,SC2050,SC2154,SC2157,SC2194"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+(\.\d+)*\s*$")
# Repository paths a run: script or an input may name
REPO_PATH = re.compile(
    r"(?<![\w./$-])(?:\./)?((?:Dockerfile\.[\w-]+|(?:charts|scripts|e2e|crds|tests|examples|\.ci|\.github)(?:/[\w.-]+)*))"
)

Workflow = dict[str, Any]


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def load(path: Path) -> Workflow:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    if True in data:  # YAML 1.1 reads the `on:` key as the boolean true
        data["on"] = data.pop(True)
    return data


def jobs(workflow: Workflow) -> dict[str, dict[str, Any]]:
    found = workflow.get("jobs")
    assert isinstance(found, dict), "a workflow without jobs"
    assert found, "a workflow without jobs"
    return found


def steps(workflow: Workflow) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for job_name, job in jobs(workflow).items():
        for index, step in enumerate(job.get("steps", [])):
            yield job_name, index, step


def step_label(job: str, index: int, step: dict[str, Any]) -> str:
    return f"jobs.{job}.steps[{index}] ({step.get('name') or step.get('uses') or 'run'})"


def run_steps(workflow: Workflow) -> Iterator[tuple[str, dict[str, Any]]]:
    for job, index, step in steps(workflow):
        if "run" in step:
            yield step_label(job, index, step), step


def expand(text: str, env: dict[str, str]) -> str:
    """`$VAR`, `${VAR}` and `${{ env.VAR }}` of the workflow's env, replaced by their values."""
    text = re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env.get(m.group(1), m.group(0)), text)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def commands(script: str, env: dict[str, str]) -> list[list[str]]:
    """The script's commands as words (env expanded), one per line (continuations joined)."""
    joined = script.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(expand(line, env), comments=True))]


def shell_findings(workflow: Workflow) -> list[str]:
    """ShellCheck's findings on every run: step (bash, the runner's default), one line each."""
    findings: list[str] = []
    for label, step in run_steps(workflow):
        shell = step.get("shell", workflow.get("defaults", {}).get("run", {}).get("shell", "bash"))
        assert shell in ("bash", "sh"), f"{label}: shell {shell!r} is not checked here"
        script = EXPRESSION.sub(lambda m: "_" * len(m.group(0)), str(step["run"]))
        result = subprocess.run(
            [
                str(BIN / "shellcheck"),
                f"--shell={shell}",
                "--format=gcc",
                f"--exclude={SHELLCHECK_EXCLUDES}",
                "-",
            ],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            findings.append(f"{label}:\n{result.stdout}{result.stderr}")
    return findings


def schema_check(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---- syntax -----------------------------------------------------------------------------------


def test_the_workflows_are_there() -> None:
    assert {CI, E2E} <= set(workflow_files())


def test_workflows_match_githubs_schema() -> None:
    result = schema_check(workflow_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(CI.read_text().replace("timeout-minutes: 75", "timeout-minute: 75", 1))
    assert broken.read_text() != CI.read_text()
    result = schema_check([broken])
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_run_steps_pass_shellcheck(path: Path) -> None:
    findings = shell_findings(load(path))
    assert not findings, "\n".join(findings)


def test_shellcheck_reports_a_broken_run_step() -> None:
    workflow: Workflow = {
        "jobs": {
            "j": {
                "steps": [
                    {"run": "echo fine"},
                    {
                        "name": "bad",
                        "run": 'rm -rf $TARGET/*\nif [ $x = 1 ]; then echo "${{ github.sha }}"; fi',
                    },
                ]
            }
        }
    }
    (finding,) = shell_findings(workflow)
    assert finding.startswith("jobs.j.steps[1] (bad)")
    assert "SC2086" in finding


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_run_steps_take_expressions_through_env(path: Path) -> None:
    """No `${{ }}` inside a script: a value pasted into the shell can inject commands (a branch
    name, a pull request's title); env: passes it as data."""
    found = [label for label, step in run_steps(load(path)) if EXPRESSION.search(str(step["run"]))]
    assert not found, f"`${{{{ }}}}` in run: scripts of {', '.join(found)}; pass the value through env:"


# ---- limits and privileges ----------------------------------------------------------------------


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_every_job_and_run_step_has_a_timeout(path: Path) -> None:
    workflow = load(path)
    for name, job in jobs(workflow).items():
        minutes = job.get("timeout-minutes")
        assert isinstance(minutes, int), f"jobs.{name}: timeout-minutes {minutes!r}"
        assert 0 < minutes <= MAX_JOB_MINUTES, f"jobs.{name}: timeout-minutes {minutes}"
        for index, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            step_minutes = step.get("timeout-minutes")
            label = step_label(name, index, step)
            assert isinstance(step_minutes, int), f"{label}: no timeout-minutes"
            assert step_minutes > 0, f"{label}: timeout-minutes {step_minutes}"
            assert step_minutes <= minutes, f"{label}: {step_minutes} minutes, more than its job's {minutes}"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_the_token_is_read_only(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") == {"contents": "read"}
    for name, job in jobs(workflow).items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), f"jobs.{name}: permissions {permissions!r}"
        assert all(value in ("read", "none") for value in permissions.values()), f"jobs.{name}: {permissions}"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_every_action_is_pinned_by_commit(path: Path) -> None:
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
        if not match:
            continue
        action, rest = match.groups()
        if action.startswith("./"):
            continue
        if action.startswith("docker://"):
            assert "@sha256:" in action, f"{path.name}:{number}: {action} is not pinned by digest"
            continue
        assert PINNED_ACTION.match(action), (
            f"{path.name}:{number}: {action} is not pinned by a full commit SHA"
        )
        assert VERSION_COMMENT.search(rest), (
            f"{path.name}:{number}: {action} needs its version in a comment (# vX.Y.Z)"
        )
        name, _, sha = action.partition("@")
        assert pins.setdefault(name.lower(), sha) == sha, (
            f"{path.name}:{number}: {name} pinned to two commits"
        )


def test_actions_are_pinned_alike_across_workflows() -> None:
    pins: dict[str, set[str]] = {}
    for path in workflow_files():
        for _, _, step in steps(load(path)):
            if "uses" in step and not str(step["uses"]).startswith(("./", "docker://")):
                name, _, ref = str(step["uses"]).partition("@")
                pins.setdefault(name.lower(), set()).add(ref)
    assert {name: refs for name, refs in pins.items() if len(refs) > 1} == {}


# ---- the CI workflow --------------------------------------------------------------------------


def ci_run_command() -> str:
    """What .ci/run ends by running (its `exec` line)."""
    (line,) = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("exec ")]
    return line.removeprefix("exec ").strip()


def test_ci_runs_what_ci_run_runs() -> None:
    workflow = load(CI)
    assert set(workflow["on"]) >= {"push", "pull_request"}
    command = ci_run_command()
    assert command == "scripts/test"
    runs = [str(step["run"]).strip() for _, step in run_steps(workflow)]
    assert runs.count(command) == 1, f"no step runs exactly {command!r}: {runs}"
    (python,) = [
        step
        for _, _, step in steps(workflow)
        if str(step.get("uses", "")).startswith("actions/setup-python@")
    ]
    assert str(python["with"]["python-version"]) == "3.11"
    assert python["with"]["cache"] == "pip"


def apt_packages(script: str) -> set[str]:
    """The packages every `apt-get install` of a script installs."""
    packages: set[str] = set()
    for words in commands(script, {}):
        for start, word in enumerate(words):
            if word == "install" and start > 0 and words[start - 1] == "apt-get":
                packages |= {
                    w for w in words[start + 1 :] if not w.startswith("-") and w not in ("&&", ">/dev/null")
                }
                break
    return packages


def test_ci_installs_the_os_packages_scripts_test_and_scripts_images_would_install() -> None:
    """scripts/test installs them itself only as root; the runner's user is not root."""
    needed = apt_packages((ROOT / "scripts" / "test").read_text().replace("&&", "\n"))
    needed |= apt_packages((ROOT / "scripts" / "images").read_text().replace("&&", "\n"))
    assert {"redis-server", "prometheus"} <= needed
    installed: set[str] = set()
    for _, step in run_steps(load(CI)):
        installed |= apt_packages(str(step["run"]))
    assert needed <= installed, f"the CI workflow does not install {sorted(needed - installed)}"


# ---- what the workflows name exists ------------------------------------------------------------


def referenced_paths(workflow: Workflow) -> set[str]:
    texts = [str(step["run"]) for _, step in run_steps(workflow)]
    for _, _, step in steps(workflow):
        texts += [str(value) for value in step.get("with", {}).values()]
    return {match.group(1) for text in texts for match in REPO_PATH.finditer(text)}


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_every_path_a_workflow_names_exists(path: Path) -> None:
    paths = referenced_paths(load(path))
    missing = sorted(name for name in paths if not (ROOT / name).exists())
    assert not missing, f"{path.name} names {missing}, which are not in the repository"


def test_the_path_check_sees_a_missing_file() -> None:
    workflow: Workflow = {
        "jobs": {"j": {"steps": [{"run": "docker build -f Dockerfile.nothing charts/none ."}]}}
    }
    assert referenced_paths(workflow) == {"Dockerfile.nothing", "charts/none"}


def test_the_e2e_workflow_uses_the_repositorys_images_chart_and_suite() -> None:
    paths = referenced_paths(load(E2E))
    assert {
        "Dockerfile.gateway",
        "Dockerfile.operator",
        "charts/routeiq-operator",
        "e2e",
        "scripts/setup",
        ".github/kind/values.yaml",
        ".github/kind/smoke-gateway.yaml",
    } <= paths


# ---- the e2e workflow's images, chart values and suite ----------------------------------------


def e2e_commands() -> list[list[str]]:
    workflow = load(E2E)
    env = {str(key): str(value) for key, value in workflow.get("env", {}).items()}
    return [words for _, step in run_steps(workflow) for words in commands(str(step["run"]), env)]


def option_values(words: list[str], *names: str) -> list[str]:
    return [words[index + 1] for index, word in enumerate(words[:-1]) if word in names]


def builds() -> list[list[str]]:
    return [words for words in e2e_commands() if words[:3] == ["docker", "buildx", "build"]]


def dockerfile_args_and_stages(dockerfile: Path) -> tuple[set[str], set[str]]:
    text = dockerfile.read_text()
    args = set(re.findall(r"^ARG\s+(\w+)", text, re.MULTILINE))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))
    return args, stages


def test_image_builds_pass_only_what_their_dockerfile_declares() -> None:
    found = builds()
    assert len(found) == 3
    for words in found:
        assert "--load" in words, f"{words}: the image must land in the runner's Docker daemon"
        (dockerfile,) = option_values(words, "-f", "--file")
        args, stages = dockerfile_args_and_stages(ROOT / dockerfile)
        for build_arg in option_values(words, "--build-arg"):
            name = build_arg.partition("=")[0]
            assert name in args, f"{dockerfile} declares no ARG {name} ({' '.join(words)})"
        for target in option_values(words, "--target"):
            assert target in stages, f"{dockerfile} has no stage {target}"


def test_the_ml_image_is_built_with_the_serving_extras() -> None:
    by_tag = {option_values(words, "-t", "--tag")[0]: words for words in builds()}
    ml = [words for tag, words in by_tag.items() if "-ml:" in tag]
    assert len(ml) == 1
    assert "ROUTEIQ_EXTRAS=gateway,ml-serve,s3,gcs" in option_values(ml[0], "--build-arg")


def kind_values() -> dict[str, Any]:
    values = yaml.safe_load(KIND_VALUES.read_text())
    assert isinstance(values, dict)
    return values


def test_the_images_built_are_loaded_and_named_by_the_chart_values() -> None:
    built = {option_values(words, "-t", "--tag")[0] for words in builds()}
    (load_command,) = [words for words in e2e_commands() if words[:3] == ["kind", "load", "docker-image"]]
    loaded = {
        word
        for word in load_command[3:]
        if not word.startswith("-") and word not in option_values(load_command, "--name")
    }
    assert loaded == built
    values = kind_values()
    operator = f"{values['image']['repository']}:{values['image']['tag']}"
    assert values["image"]["pullPolicy"] in ("Never", "IfNotPresent")
    named = {operator, values["gatewayImages"]["gateway"], values["gatewayImages"]["gatewayML"]}
    assert named == built


def rendered_operator_deployment() -> dict[str, Any]:
    workflow = load(E2E)
    release, namespace = workflow["env"]["RELEASE"], workflow["env"]["RELEASE_NAMESPACE"]
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(kind_values(), name=release, namespace=namespace, is_install=True)
    documents = [
        document
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document is not None
    ]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == release, "kubectl rollout status waits for deployment/$RELEASE"
    assert deployment["metadata"]["namespace"] == namespace
    assert isinstance(deployment, dict)
    return deployment


def test_the_chart_accepts_the_e2e_values_and_runs_the_built_images() -> None:
    workflow = load(E2E)
    deployment = rendered_operator_deployment()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == workflow["env"]["OPERATOR_IMAGE"]
    assert container["imagePullPolicy"] == "Never"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ROUTEIQ_GATEWAY_IMAGE"] == workflow["env"]["GATEWAY_IMAGE"]
    assert env["ROUTEIQ_GATEWAY_ML_IMAGE"] == workflow["env"]["GATEWAY_ML_IMAGE"]
    # it watches only its own namespace: the e2e suite's operator owns the namespaces it creates
    assert f"--namespace={workflow['env']['RELEASE_NAMESPACE']}" in container["args"]
    assert "--all-namespaces" not in container["args"]


def test_the_smoke_gateway_is_valid_and_watched_by_the_installed_operator() -> None:
    result = subprocess.run(
        [str(BIN / "routeiq"), "validate", "-f", str(SMOKE_GATEWAY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    gateway = yaml.safe_load(SMOKE_GATEWAY.read_text())
    assert gateway["metadata"]["namespace"] in kind_values()["watchNamespaces"]
    assert "image" not in gateway["spec"], "the smoke test checks the chart's gatewayImages.gateway"
    secrets = [
        option_values(words, "generic")[0]
        for words in e2e_commands()
        if words[:4] == ["kubectl", "create", "secret", "generic"]
    ]
    assert secrets == [gateway["spec"]["secrets"]["masterKey"]["name"]]


def test_the_kind_node_image_is_pinned_by_digest() -> None:
    (kind,) = [
        step for _, _, step in steps(load(E2E)) if str(step.get("uses", "")).startswith("helm/kind-action@")
    ]
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", kind["with"]["node_image"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", kind["with"]["version"])


def test_the_pytest_step_sets_what_the_e2e_suite_reads() -> None:
    read = set(
        re.findall(r"os\.environ\.get\(\"(ROUTEIQ_E2E_\w+)\"", (ROOT / "e2e" / "conftest.py").read_text())
    )
    assert read, "e2e/conftest.py reads no ROUTEIQ_E2E_ variable any more: update this test"
    (pytest_step,) = [
        step for _, step in run_steps(load(E2E)) if str(step["run"]).startswith(".venv/bin/pytest e2e")
    ]
    assert read <= set(pytest_step.get("env", {})), (
        f"the pytest step does not set {sorted(read - set(pytest_step['env']))}"
    )
    assert {"LITELLM_LOCAL_MODEL_COST_MAP", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} <= set(
        pytest_step["env"]
    )


def test_failures_dump_the_clusters_state() -> None:
    (dump,) = [step for _, _, step in steps(load(E2E)) if step.get("if") == "failure()"]
    script = str(dump["run"])
    for needed in (
        "kubectl get routeiqgateways",
        "kubectl describe routeiqgateways",
        "kubectl logs",
        "kubectl get events",
    ):
        assert needed in script, f"the failure dump lacks {needed!r}"


def test_the_smoke_gateways_deployment_runs_the_charts_gateway_image() -> None:
    """What the installed operator makes of the smoke gateway (`routeiq render`, with the
    operator's environment as the chart renders it) is the Deployment the workflow inspects."""
    (container,) = rendered_operator_deployment()["spec"]["template"]["spec"]["containers"]
    operator_env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    result = subprocess.run(
        [str(BIN / "routeiq"), "render", "-f", str(SMOKE_GATEWAY)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(BIN), **operator_env},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deployments = {
        document["metadata"]["name"]: document
        for document in yaml.safe_load_all(result.stdout)
        if document and document["kind"] == "Deployment"
    }
    inspected = [
        words[start + 3]
        for words in e2e_commands()
        # `image=$(kubectl get deployment NAME ...)`: the command substitution's words
        for start in range(len(words))
        if [word.rpartition("$(")[2] for word in words[start : start + 3]] == ["kubectl", "get", "deployment"]
    ]
    assert len(inspected) == 1, inspected
    (name,) = inspected
    containers = {c["name"]: c for c in deployments[name]["spec"]["template"]["spec"]["containers"]}
    assert containers["gateway"]["image"] == load(E2E)["env"]["GATEWAY_IMAGE"]
