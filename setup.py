"""Build of the compiled model: the hot modules of sim/ compiled by Cython at install.

Everything else about the package is declared in pyproject.toml, including the list of
compiled modules (`[tool.compactsim] compiled`). Those modules stay plain Python files, the
one place their algorithm is written, and run as they are where they are not compiled;
Cython compiles the same files ("pure Python mode"), with C types only where a function
declares them (`cython.locals`, `cython.declare`). Annotations stay documentation
(`annotation_typing` off): every value keeps its Python type, so a run gives the same
results compiled or not, and no floating-point contraction (-ffp-contract=off) lets the C
compiler round a typed expression differently from Python.
"""

import tomllib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["compactsim"]["compiled"]
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True,
              "embedsignature": True}
# -O1 without debug info: a third of -O3 -g's build time, for nearly all of its speed.
CFLAGS = ["-O1", "-g0", "-ffp-contract=off"]



def cimport_root() -> str:
    """A directory where the package's .pxd declarations sit under their import names
    (compactsim/sim/*.pxd): the source tree maps sim/ to compactsim.sim
    (pyproject's package-dir), and Cython finds a module's declarations, and those it
    cimports, by the module's full name."""
    root = ROOT / "build" / "cimport"
    package = root / "compactsim"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.pxd").touch()
    link = package / "sim"
    if not link.is_symlink():
        link.symlink_to(ROOT / "sim", target_is_directory=True)
    return str(root)


setup(ext_modules=cythonize(
    [Extension(f"compactsim.sim.{name}", [f"sim/{name}.py"], extra_compile_args=CFLAGS)
     for name in COMPILED],
    include_path=[cimport_root()], compiler_directives=DIRECTIVES, quiet=True))
