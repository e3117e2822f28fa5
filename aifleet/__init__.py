"""The composition root: the `aifleet` CLI, the embedded fleet of `aifleet up` and the embedded
servers. It sits above workers/ and bridge/, which never import it (tests/unit/test_layout.py).
"""
