"""The build governor: memory, power mode and heat before a build, and how long builds take.

``readings`` reads the host (bounded, from a configurable root), ``admission`` decides
(clamp the workspace, refuse, wait for heat), ``eta`` estimates from earlier builds (history in
the provenance records) and shows it in ``run``. Nothing here is imported on a warm boot: only a
build calls it.
"""
