"""Router-model artifacts: format, verification, signing, loading from file://, s3://, gs://.

    manifest   the format contract: Manifest, write_artifact, parse_manifest, ArtifactError
    verify     read_artifact -> VerifiedArtifact (digest, signature, files; safe decoders)
    archive    reading a directory or .tar.gz in memory, within Limits
    signing    ed25519 keys and manifest.sig (needs `cryptography`, the ml extra)
    publish    sign_manifest, pack_artifact (reproducible .tar.gz)
    ssrf       SsrfPolicy: which endpoints downloads may reach
    sources    fetch_artifact, load_artifact, source_version for paths, file://, s3://, gs://
    cache      ModelCache: the per-worker LRU of decoded models, keyed by digest
    loader     ArtifactSlot: the serving model; a refused artifact never replaces it
    cli        `routeiq artifact inspect|verify|keygen|sign|pack`

See docs/artifacts.md. This package imports nothing at import time, so importing the format
(`routeiq_router.artifacts.manifest`) stays cheap.
"""
