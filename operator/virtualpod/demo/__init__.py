"""The scenario `virtualpod demo` plays."""
