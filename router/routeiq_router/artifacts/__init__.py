"""Router-model artifacts: format, verification, signing, loading from file://, s3://, gs://."""
