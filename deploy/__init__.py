"""Deployment files and deploy/render.py, which writes the Kubernetes manifests of the
components (`make deploy`). Not part of the installed package."""
