"""Fleets: engines built once per SKU, shipped as signed OCI bundles, stored as candidates.

``keys`` (Ed25519), ``layout`` (the OCI documents and their checks), ``bundle`` (write a layout
folder or tar), ``fetch`` (verify while reading, from a layout, a tar or a registry),
``candidates`` (where verified files land in the cache), ``registry`` (push and pull through
``oras``), ``commands`` (the CLI), ``promote`` (a candidate checked and published by ``run``,
which imports it, with ``candidates`` and ``layout``, only when this SKU has
candidates; never ``cryptography`` or ``oras``).
"""

#: How to get the fleet extra's packages (cryptography, oras): engine-init is not on PyPI.
INSTALL_HINT = ("use the engine-init image (it has them), or install engine-init from its "
                "source folder with the fleet extra: pip install '.[fleet]'")
