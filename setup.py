"""Build hook only; the project is described in pyproject.toml.

The top-level ``profiles/``, ``certs/`` and ``service/`` directories are the source
of truth in the repository; a wheel carries a copy of them as package data under
``sidecar/data/`` (found at run time by :func:`sidecar.data.resource_dir`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA_DIRS = ("profiles", "certs", "service")
#: The versions CI tested, carried so that install.sh installs a wheel with them.
DATA_FILES = ("constraints.txt",)
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
#: The gettext catalogs (sources: .po, in the repository); the wheel carries them compiled.
LOCALE = Path("sidecar", "i18n", "locale")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the top-level directories in place
        for name in DATA_DIRS:
            source = HERE / name
            if source.is_dir():
                target = Path(self.build_lib) / "sidecar" / "data" / name
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=IGNORE)
        for name in DATA_FILES:
            shutil.copy2(HERE / name, Path(self.build_lib) / "sidecar" / "data" / name)
        compile_catalogs(HERE / LOCALE, Path(self.build_lib) / LOCALE)


def compile_catalogs(source: Path, target: Path) -> None:
    """Each ``<lang>/LC_MESSAGES/<domain>.po`` to a ``.mo`` beside its copy in the build."""
    # Imported here: only building a wheel needs Babel at build time.
    from babel.messages import mofile, pofile

    for po in source.glob("*/LC_MESSAGES/*.po"):
        mo = target / po.relative_to(source).with_suffix(".mo")
        mo.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as handle:
            catalog = pofile.read_po(handle, locale=po.parent.parent.name)
        with mo.open("wb") as handle:
            mofile.write_mo(handle, catalog)


setup(cmdclass={"build_py": BuildPyWithData})
