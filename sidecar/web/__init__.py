"""Static assets of the daemon's own pages (``/`` status, ``/docs`` API reference).

Plain HTML, CSS and JavaScript, no third-party code and no CDN: the pages must work
on a workstation with no Internet access. Served by :mod:`sidecar.api.docs`.
"""
