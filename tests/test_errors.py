"""One error vocabulary: every error below the API has the common root and one family,
every family has an answer in the API's one table, and no engine error knows HTTP."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sidecar
from sidecar.api.problems import PROBLEMS, problem_for
from sidecar.cns.outbox import UnknownMessage
from sidecar.cns.transport import CnsTimeout, CnsUnreachable
from sidecar.errors import (
    FAMILIES,
    InternalError,
    Misconfigured,
    SidecarError,
    UpstreamFailed,
    UpstreamSlow,
    UpstreamUnavailable,
)
from sidecar.signing.pdf_checks import PdfRefused
from sidecar.signing.workers import WorkersUnavailable
from sidecar.storage import StorageUnavailable
from sidecar.trust.revocation import ChainNotValid

SIDECAR = Path(sidecar.__file__).parent

#: Exceptions that need not derive from SidecarError, and why. Besides these, a class
#: whose name starts with "_" is module-private control flow (a parser stopping early,
#: a deadline inside a worker), caught in the module that raises it.
ALLOWED_OUTSIDE = {
    # The API's rendered answer itself, not an error of a lower layer.
    "sidecar.api.problems.Problem",
    # The person at the setup terminal said stop: the interactive setup's control
    # flow, never raised in the daemon.
    "sidecar.setup.terminal.SetupAborted",
}

#: Bases that gather one engine's errors of several causes (so that ``except
#: KeyLayerError`` keeps working): in no family themselves, never raised as such.
GROUP_BASES = {
    "sidecar.keys.errors.KeyLayerError",
    "sidecar.trust.revocation.RevocationError",
}

#: Attribute and parameter names that would carry an HTTP status.
STATUS_NAMES = {"status", "status_code", "http_status"}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _sidecar_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of sidecar (imported to be seen)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(sidecar.__path__, "sidecar."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI when imported
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[_name(obj)] = obj
    return list(found.values())


EXCEPTIONS = _sidecar_exceptions()
ERRORS = [
    cls
    for cls in EXCEPTIONS
    if not cls.__name__.startswith("_")
    and _name(cls) not in ALLOWED_OUTSIDE
    and cls.__module__ != "sidecar.errors"
]


def test_the_walk_sees_the_engines() -> None:
    names = {_name(cls) for cls in ERRORS}
    # A walk that missed the packages would make the checks below vacuous.
    assert len(ERRORS) > 40
    assert {"sidecar.keys.errors.KeyLocked", "sidecar.storage.StorageUnavailable"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=_name)
def test_every_error_has_the_root_and_one_family(cls: type[BaseException]) -> None:
    assert issubclass(cls, SidecarError), f"{_name(cls)} does not derive from SidecarError"
    families = [family.__name__ for family in FAMILIES if issubclass(cls, family)]
    if _name(cls) in GROUP_BASES:
        assert families == []
    else:
        assert len(families) == 1, f"{_name(cls)} belongs to {families or 'no family'}"


def test_group_bases_are_never_raised_as_such() -> None:
    """A group base raised directly would be answered as an internal error."""
    groups = {name.rsplit(".", 1)[1] for name in GROUP_BASES}
    raised = []
    for path in SIDECAR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in groups:
                    raised.append(f"{path.relative_to(SIDECAR)}:{node.lineno} {name}")
    assert raised == []


@pytest.mark.parametrize("cls", ERRORS, ids=_name)
def test_every_error_has_an_answer(cls: type[BaseException]) -> None:
    """The table answers every error by its own entry or its family's; only a failure
    of sidecar itself (misconfigured, internal) is left to the 500 answer."""
    entry = next((PROBLEMS[c] for c in cls.__mro__ if c in PROBLEMS), "none")
    assert entry != "none"
    internal = issubclass(cls, Misconfigured | InternalError) or _name(cls) in GROUP_BASES
    if not internal:
        assert entry is not None, f"{_name(cls)} would be answered 500 internal_error"


@pytest.mark.parametrize(
    "family", [*FAMILIES, UpstreamFailed, UpstreamSlow, UpstreamUnavailable, SidecarError]
)
def test_every_family_is_in_the_table(family: type[SidecarError]) -> None:
    assert family in PROBLEMS
    problem = problem_for(family("what went wrong"))
    if family in (Misconfigured, InternalError, SidecarError):
        assert problem is None  # the middleware's internal error: logged, request id
    else:
        assert problem is not None
        assert 400 <= problem.status < 600 and problem.status != 500
        assert problem.code and problem.detail.startswith("what went wrong")


def _exception_classes(tree: ast.Module, names: set[str]) -> list[ast.ClassDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in names]


def _status_uses(cls: ast.ClassDef) -> list[str]:
    """Where an exception class holds or takes an HTTP status."""
    found = []
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
            if name in STATUS_NAMES:
                found.append(f"{cls.name}:{node.lineno} sets {name}")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg in STATUS_NAMES:
                    found.append(f"{cls.name}.{node.name} takes {arg.arg}")
    return found


def test_no_error_below_the_api_carries_an_http_status() -> None:
    by_file: dict[Path, set[str]] = {}
    for cls in EXCEPTIONS:
        module = sys.modules[cls.__module__]
        path = Path(inspect.getfile(module))
        if SIDECAR / "api" in path.parents:
            continue  # the API decides statuses
        by_file.setdefault(path, set()).add(cls.__name__)
    assert len(by_file) > 20
    found = []
    for path, names in by_file.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [
            f"{path.name}: {use}"
            for cls in _exception_classes(tree, names)
            for use in _status_uses(cls)
        ]
    assert found == []


def test_the_status_check_would_see_one() -> None:
    """The check above finds what it looks for (PdfRefused as it was)."""
    tree = ast.parse(
        "class PdfRefused(Exception):\n"
        "    def __init__(self, status: int, code: str) -> None:\n"
        "        self.status = status\n"
    )
    (cls,) = _exception_classes(tree, {"PdfRefused"})
    assert len(_status_uses(cls)) == 2


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (PdfRefused("malformed_pdf", "not a PDF"), 400, "malformed_pdf", None),
        (PdfRefused("unsupported_pdf", "encrypted"), 422, "unsupported_pdf", None),
        (PdfRefused("pdf_certified", "certified"), 422, "pdf_certified", None),
        (PdfRefused("pdf_locked", "locked"), 422, "pdf_locked", None),
        (WorkersUnavailable("no worker", retry_after=7), 503, "workers_busy", "7"),
        (StorageUnavailable("outbox", "disk full"), 503, "storage_unavailable", "60"),
        (CnsTimeout("the CNS did not answer"), 504, "upstream_timeout", None),
        (CnsUnreachable("refused"), 503, "upstream_unavailable", "30"),
        (UnknownMessage("no such message"), 404, "not_found", None),
        (ChainNotValid("untrusted"), 422, "refused", None),
    ],
)
def test_answers(error: SidecarError, status: int, code: str, retry_after: str | None) -> None:
    problem = problem_for(error)
    assert problem is not None
    assert (problem.status, problem.code) == (status, code)
    assert problem.headers.get("Retry-After") == retry_after


def test_the_table_needs_no_route_module() -> None:
    """The answers no longer depend on which API modules were imported (they were
    registered as a side effect of importing the routes that raise them)."""
    script = (
        "import sys\n"
        "from sidecar.api.problems import problem_for\n"
        "from sidecar.keys import KeyLocked\n"
        "from sidecar.storage import StorageUnavailable\n"
        "assert not any(m in sys.modules for m in "
        "('sidecar.api.signing_keys', 'sidecar.api.cns', 'sidecar.api.xml'))\n"
        "p = problem_for(KeyLocked('pin_missing', 'no PIN', key_id='k'))\n"
        "s = problem_for(StorageUnavailable('outbox', 'disk full'))\n"
        "print(p.status, p.code, s.status, s.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["423", "key_locked", "503", "storage_unavailable"]
