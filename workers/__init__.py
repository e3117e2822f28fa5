"""aifleet workers: the worker runtime, one package per component, and the embedded servers."""
