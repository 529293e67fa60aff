"""The `routeiq gateway` process: LiteLLM's proxy under uvicorn with RouteIQ routing in every worker."""
