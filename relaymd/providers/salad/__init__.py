"""SaladCloud: container groups whose replicas are workers that join through the bucket."""
