"""Fleets: engines built once per SKU, shipped as signed OCI bundles, stored as candidates.

``keys`` (Ed25519), ``layout`` (the OCI documents and their checks), ``bundle`` (write a layout
folder or tar), ``fetch`` (verify while reading, from a layout, a tar or a registry),
``candidates`` (the candidates folder: the only one ``pull`` and ``import`` write, and untrusted
input to ``run``), ``registry`` (push and pull through ``oras``, bounded in time),
``trust`` (is a candidates folder still the signed bundle),
``copies`` (candidates copied into the cache while hashed, ahead of their promotion) and
``promote`` (a candidate checked and published by ``run``, which imports it, with
``candidates``, ``copies`` and ``layout``, only when this SKU has candidates; never
``cryptography`` or ``oras``). The fleet's commands are in :mod:`app.commands`: this package
holds no CLI code. docs/fleet.md describes the trust model.
"""

#: How to get the fleet extra's packages (cryptography, oras): engine-init is not on PyPI.
INSTALL_HINT = ("use the engine-init image (it has them), or install engine-init from its "
                "source folder with the fleet extra: pip install '.[fleet]'")
