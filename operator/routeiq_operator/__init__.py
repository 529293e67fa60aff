"""RouteIQ's Kubernetes operator: the custom resources, their CRDs, and the controllers.

It imports RouteIQ's gateway contracts (settings names, strategy names) but never LiteLLM;
manifest builders are pure functions (a custom resource in, manifests out).
"""
