"""Running sidecar as an operating-system service.

- :mod:`.notify`: systemd's ``sd_notify`` (READY, STOPPING, WATCHDOG) without libsystemd.
- :mod:`.manager`: the :class:`~.manager.ServiceManager` interface behind
  ``sidecar service install|uninstall|start|stop|status``, the service definition
  (:class:`~.manager.ServiceSpec`) and the systemd implementation.
- :mod:`.host`: the service's life (start, report running, stop draining requests),
  independent of Windows so the tests can drive it.
- :mod:`.windows`: the pywin32 glue, imported only on Windows.

This package imports nothing heavy: :mod:`sidecar.server` uses :mod:`.notify`.
"""
