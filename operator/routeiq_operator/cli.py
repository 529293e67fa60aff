"""The operator's `routeiq` subcommands: crds, alerts, validate, render, operator.

`routeiq_router.cli` finds `register` through the `routeiq.commands` entry point, so the
gateway's CLI never imports the operator (or Kubernetes libraries) itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from routeiq_operator.crds import KINDS, render_crds, write_crds
from routeiq_operator.gateway.alerts import DEPLOY_FILE, deploy_rules_text
from routeiq_operator.gateway.api import RouteIQGateway
from routeiq_operator.gateway.children import ClusterFacts, desired_children
from routeiq_operator.gateway.images import GatewayImages, ImagePolicy, image_refusal
from routeiq_operator.resource import GROUP
from routeiq_operator.schema import custom_resource_definition
from routeiq_operator.validation import InvalidSpec, check, load

__all__ = ["UnreadableYaml", "iter_documents", "register"]


class UnreadableYaml(yaml.YAMLError):
    """A file that is not valid YAML, named with the line and column but without the text there
    (PyYAML's own message quotes the offending line, which may hold a credential)."""


def iter_documents(paths: list[Path]) -> Iterator[tuple[Path, int, Any]]:
    """(file, index, document) for every YAML document in the files and directories given;
    UnreadableYaml (value-free) for a file that is not valid YAML."""
    for path in paths:
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
        )
        for file in files:
            with file.open(encoding="utf-8") as stream:
                try:
                    for index, document in enumerate(yaml.safe_load_all(stream)):
                        if document is not None:
                            yield file, index, document
                except yaml.YAMLError as error:
                    mark = getattr(error, "problem_mark", None)
                    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                    problem = getattr(error, "problem", None) or type(error).__name__
                    raise UnreadableYaml(f"{file} is not valid YAML{where}: {problem}") from None


def crds(
    out: Annotated[
        Path | None,
        typer.Option(help="Directory to write one YAML file per CRD to (unset: print them all to stdout)"),
    ] = None,
) -> None:
    """Generate the CustomResourceDefinitions from the typed API models. Without --out, print them as
    one multi-document YAML stream, for `routeiq crds | kubectl apply -f -`; with
    --out DIR, write one file per CRD there and print the paths."""
    if out is None:
        typer.echo("---\n".join(render_crds().values()), nl=False)
        return
    for path in write_crds(out):
        typer.echo(str(path))


def alerts(
    out: Annotated[Path, typer.Option(help="Directory to write routeiq-alerts.yaml to")] = Path(
        "deploy/prometheus"
    ),
) -> None:
    """Write the Prometheus alert rules (the operator's own source) for plain Prometheus."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / DEPLOY_FILE
    path.write_text(deploy_rules_text(), encoding="utf-8")
    typer.echo(str(path))


def validate(
    files: Annotated[list[Path], typer.Option("-f", "--filename", help="File or directory (repeatable)")],
) -> None:
    """Check RouteIQ custom resources offline as the operator would: the CRDs' schema and CEL rules,
    then the rules CEL cannot express (no literal credential, LiteLLM's config shape). Messages
    name the path and the rule, never the value."""
    models = {custom_resource_definition(model)["spec"]["names"]["kind"]: model for model in KINDS}
    checked = failures = 0
    try:
        documents = list(iter_documents(files))
    except (OSError, yaml.YAMLError) as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    for file, index, document in documents:
        if not isinstance(document, dict) or not str(document.get("apiVersion", "")).startswith(f"{GROUP}/"):
            continue
        kind = str(document.get("kind", ""))
        name = (document.get("metadata") or {}).get("name", f"<document {index}>")
        checked += 1
        model = models.get(kind)
        problems = (
            [f"kind: unknown kind {kind!r}; RouteIQ kinds: {', '.join(sorted(models))}"]
            if model is None
            else [str(violation) for violation in check(model, document)]  # value-free messages
        )
        for problem in problems:
            typer.echo(f"{file}: {kind}/{name}: {problem}")
        failures += bool(problems)
    typer.echo(f"{checked} RouteIQ resource(s) checked, {failures} invalid", err=True)
    if failures or not checked:
        raise typer.Exit(1)


def render(
    file: Annotated[Path, typer.Option("-f", "--filename", help="File holding a RouteIQGateway")],
    without_external_secrets: Annotated[
        bool, typer.Option(help="Render as for a cluster without the External Secrets Operator")
    ] = False,
    without_service_monitors: Annotated[
        bool, typer.Option(help="Render as for a cluster without the Prometheus Operator")
    ] = False,
) -> None:
    """Print the manifests the operator would apply for each RouteIQGateway in FILE. The image
    settings of the environment (ROUTEIQ_GATEWAY_IMAGE, ROUTEIQ_GATEWAY_ML_IMAGE,
    ROUTEIQ_ALLOWED_IMAGE_REPOSITORIES, ROUTEIQ_DIGEST_REQUIRED_IMAGE_REPOSITORIES) apply as in
    the operator; experiments are not looked up (there is no cluster)."""
    try:
        images = ImagePolicy.from_env(os.environ)
        defaults = GatewayImages.from_env(os.environ)
    except ValueError as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    facts = ClusterFacts(
        external_secrets=not without_external_secrets,
        service_monitors=not without_service_monitors,
        prometheus_rules=not without_service_monitors,
        images=defaults,
    )
    try:
        documents = [doc for _, _, doc in iter_documents([file])]
    except (OSError, yaml.YAMLError) as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    gateways = [d for d in documents if isinstance(d, dict) and d.get("kind") == "RouteIQGateway"]
    if not gateways:
        typer.echo(f"routeiq: error: {file} holds no RouteIQGateway", err=True)
        raise typer.Exit(1)
    rendered: list[dict[str, Any]] = []
    for document in gateways:
        name = (document.get("metadata") or {}).get("name", "?")
        try:
            gateway = load(RouteIQGateway, document)
        except InvalidSpec as invalid:
            for violation in invalid.violations:
                typer.echo(f"{file}: RouteIQGateway/{name}: {violation}", err=True)
            raise typer.Exit(1) from None
        refusal = image_refusal(gateway, facts.variant_models, defaults, images)
        if refusal is not None:
            typer.echo(f"{file}: RouteIQGateway/{name}: Ready=False ({refusal[0]}): {refusal[1]}", err=True)
            raise typer.Exit(1)
        desired = desired_children(gateway, facts)
        for problem in desired.problems:
            typer.echo(
                f"{file}: RouteIQGateway/{name}: {problem.condition}=False ({problem.reason}): "
                f"{problem.message}",
                err=True,
            )
        rendered += desired.children
    typer.echo(yaml.safe_dump_all(rendered, sort_keys=False, width=1000), nl=False)


def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Watch only this namespace (repeatable)")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", help="Watch every namespace (default)")
    ] = False,
    liveness_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of GET /healthz")] = 8080,
    peering: Annotated[
        str, typer.Option(help="kopf peering object for single-active HA")
    ] = "routeiq-operator",
    standalone: Annotated[bool, typer.Option(help="No peering: this process is the only operator")] = False,
    api_wait_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long to wait for an unreachable API server at start-up before exiting with 1",
        ),
    ] = 60,
) -> None:
    """Run the operator: reconcile RouteIQGateways into gateway fleets. Logs are JSON lines on
    stdout; Prometheus metrics are served on ROUTEIQ_OPERATOR_METRICS_PORT (default 8081, 0: off).

    Without a cluster (no in-cluster credentials, no usable kubeconfig) it exits with 2 and one
    line on stderr. An API server that does not answer is retried with a backoff (1 s doubling to
    15 s) for --api-wait-seconds, with one line on stderr when it first fails and one when it gives
    up (exit 1)."""
    if namespace and all_namespaces:
        typer.echo("routeiq: error: --namespace and --all-namespaces exclude each other", err=True)
        raise typer.Exit(2)
    from routeiq_operator.metrics import PORT_VARIABLE, port_from_env, serve

    try:
        metrics_port = port_from_env()
    except ValueError as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    if metrics_port == liveness_port:
        typer.echo(
            f"routeiq: error: {PORT_VARIABLE}={metrics_port} is the liveness port (--liveness-port); "
            "give the metrics another port",
            err=True,
        )
        raise typer.Exit(2)
    try:
        ImagePolicy.from_env(os.environ)  # which images gateways may run: refuse a bad setting now
        GatewayImages.from_env(os.environ)  # and which they run by default
    except ValueError as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        metrics = serve(metrics_port)
    except OSError as error:
        typer.echo(f"routeiq: error: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    try:
        _wait_for_cluster(api_wait_seconds)
        import kopf

        import routeiq_operator.main  # noqa: F401 - registers the handlers
        from routeiq_operator.logs import configure_logging

        configure_logging(os.environ.get("ROUTEIQ_OPERATOR_LOG_LEVEL", "INFO"))
        kopf.run(
            clusterwide=not namespace,
            namespaces=namespace or (),
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
            peering_name=None if standalone else peering,
            standalone=standalone,
        )
    finally:
        if metrics is not None:
            metrics.close()


def _wait_for_cluster(wait_seconds: float) -> None:
    """Return once the API server answers; exit with one line when there is no cluster to talk to."""
    from routeiq_operator.kube import ClusterUnavailable, api_server_problem, load_client

    try:
        api = load_client()
    except ClusterUnavailable as error:
        typer.echo(f"routeiq: error: {error}", err=True)
        raise typer.Exit(2) from None
    deadline = time.monotonic() + wait_seconds
    delay, failed = 1.0, False
    with api:
        while (problem := api_server_problem(api, timeout=min(5.0, max(wait_seconds, 1.0)))) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                typer.echo(f"routeiq: error: {problem}; gave up after {wait_seconds:g} s", err=True)
                raise typer.Exit(1)
            if not failed:
                typer.echo(f"routeiq: {problem}; retrying for up to {wait_seconds:g} s", err=True)
                failed = True
            time.sleep(min(delay, left))
            delay = min(delay * 2, 15.0)
    if failed:
        typer.echo("routeiq: the Kubernetes API server answers; starting", err=True)


def register(app: typer.Typer) -> None:
    app.command()(crds)
    app.command()(alerts)
    app.command()(validate)
    app.command()(render)
    app.command()(operator)
