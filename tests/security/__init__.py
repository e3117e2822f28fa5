"""Security tests: tenant isolation enforced by real servers."""
