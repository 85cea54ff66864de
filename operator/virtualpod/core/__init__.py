"""The functional core: quantities, spec, QoS, sizing, tuning, domain XML, plan, settings.

Pure functions and data only. Nothing here imports kopf, libvirt, aiohttp or kmock, so
everything is tested with plain tables and property tests.
"""
