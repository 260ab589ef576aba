"""The build governor: memory, power mode and heat before a build, and how long builds take.

``readings`` reads the host (bounded, from a configurable root), ``admission`` decides
(clamp the workspace, refuse, wait for heat), ``eta`` estimates from earlier builds and
``timeline`` shows it in ``run`` (history in the provenance records). Nothing here is imported
on a warm boot: only a build calls it.
"""
