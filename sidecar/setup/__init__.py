"""``sidecar setup``: configure a workstation's real key, TSA and CNS (docs/production.md).

- :mod:`.arguments`: its flags;
- :mod:`.command`: the command and its steps;
- :mod:`.signing_key`: finding, choosing and testing the signing key;
- :mod:`.services`: the TSA and the CNS environment;
- :mod:`.secrets`: secrets into the OS secret store, undone if setup stops;
- :mod:`.terminal`: questions on a terminal;
- :mod:`.toml_out`: settings → ``sidecar.toml`` text.
"""
