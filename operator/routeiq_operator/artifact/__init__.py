"""`ModelArtifact`: its API model, the verification at the source, and its controller."""
