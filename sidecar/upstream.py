"""Upstream failures (TSA, OCSP/CRL, CNS) in words for people; the raw cause to the log.

A caller reads an error's detail, a person reads the status page: neither should get
an exception's own text (an ASN.1 parser's complaint, a socket error tuple, a class
name). :func:`connection_words` says what happened in plain words; :func:`log_cause`
writes the raw cause to the log with the id of the request being served, so that
whoever debugs finds it from the ``instance`` of the problem the caller got.
"""

from __future__ import annotations

import logging

import aiohttp

from .logs import request_extra

__all__ = ["connection_words", "describe", "log_cause"]


def describe(exc: BaseException) -> str:
    """The exception's type and text: for the log only."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_cause(log: logging.Logger, upstream: str, what: str, exc: BaseException) -> None:
    """Log the low-level cause of *what* went wrong with *upstream*, with the request id."""
    log.warning("%s: %s: %s", upstream, what, describe(exc), extra=request_extra())


def connection_words(exc: BaseException) -> str:
    """A failed HTTP exchange in words for people."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused, or the host cannot be found"
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "the connection was closed without an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ContentTypeError | ValueError):
        return "the answer is unusable"
    return "the connection failed"
