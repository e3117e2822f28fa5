"""The cache component: tenant-scoped entries on the Redis protocol."""
