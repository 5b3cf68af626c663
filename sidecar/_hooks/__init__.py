"""The fence around library internals: every private hook sidecar uses, one module per library.

pyHanko, signxml, asn1crypto and cryptography are pinned (``pyproject.toml`` bounds,
``constraints.txt``), but a private name can still change in a patch release. Each
module here is the only place that names one library's private attributes, and
``tests/test_library_hooks.py`` checks each hook is still there, with the signature
and the behaviour relied on, so an upgrade that breaks one fails there by name.

- :mod:`.pyhanko_hooks`: ``_update_meta`` (metadata rewrite), ``_signed_attr_providers``;
- :mod:`.signxml_hooks`: ``_build_sig``, ``_build_transforms_for_reference``, ``_get_digest``;
- :mod:`.asn1crypto_hooks`: ``_header`` (cached encoding header), ``_copy``;
- :mod:`.cryptography_hooks`: ``PSS._salt_length``;
- :mod:`.pyhanko_eutl_hooks`: pyHanko's trusted-list parser, ``eutl_parse.
  _validate_and_extract_tl_data_multiple_certs`` and ``_raw_tl_parse`` (apart, so that
  signing never imports the ``etsi`` extra; tested in ``tests/test_trust_lists.py``).

aiohttp's private server hooks are the whole of :mod:`sidecar.api.protocol` (the HTTP
layer's own, listed in its ``PRIVATE_HOOKS`` and tested in ``tests/test_http_surface.py``).

(The key wrappers in :mod:`sidecar.keys.signxml_adapter` subclass cryptography's public
abstract key classes; the same test instantiates them, which fails when a release adds
an abstract method.)
"""
