"""Pure manifest builders: a custom resource in, the manifests it should own out."""
