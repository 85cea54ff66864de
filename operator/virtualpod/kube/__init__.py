"""The Kubernetes shell: the only code that registers Kopf handlers."""
