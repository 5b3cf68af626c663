"""RFC 3161 timestamps (being split into parts; see :mod:`.check`)."""

from .check import *  # noqa: F403
from .check import __all__ as __all__
from .check import _check_token_signature, _check_tsa_eku, designates  # noqa: F401
