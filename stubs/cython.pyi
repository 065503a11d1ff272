# What mypy sees of the `cython` module the compiled sim/ modules use in pure Python mode:
# the decorators, C type names and helpers are opaque (Any), except Cython's dataclasses,
# which are the standard library's as far as the type checker is concerned.
import dataclasses as dataclasses
from typing import Any

def __getattr__(name: str) -> Any: ...
