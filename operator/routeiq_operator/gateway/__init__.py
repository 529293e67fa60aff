"""`RouteIQGateway`: its API model, its pure parts (tier presets, the child manifests, the
rollout decision) and its controller."""
