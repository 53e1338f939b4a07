"""Checks of file-system paths before a command starts: outputs that can be written, inputs that
are never overwritten.

A command that would fail only when it writes its result (minutes or hours later), or that would
replace the user's own input, is refused up front with a ``DataError`` that names the option.
See ``docs/errors.md`` for the catalogue of bad inputs and their messages.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from adptycho.errors import DataError

__all__ = ["check_output_path", "check_no_overwrite", "same_file"]


def check_output_path(path, option: str = "--out", directory: bool = False) -> None:
    """Raise ``DataError`` unless ``path`` can be written.

    Args:
        path: the output path (a file, or with ``directory`` a directory that is created).
        option: the command-line option that gave it, for the message.
        directory: ``path`` is a directory to create or reuse (model directories, the demo).

    The parent directory must exist (outputs are never written into directories created by
    accident from a typo) and be writable; a file output must not be an existing directory, a
    directory output must not be an existing file.
    """
    path = os.fspath(path)
    if not path:
        raise DataError(f"{option} is empty")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{option} {path}: the directory {parent} does not exist")
    if directory:
        if os.path.exists(path) and not os.path.isdir(path):
            raise DataError(f"{option} {path} is an existing file, not a directory")
        target = path if os.path.isdir(path) else parent
    else:
        if os.path.isdir(path):
            raise DataError(f"{option} {path} is a directory, not a file")
        target = parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise DataError(f"{option} {path}: the directory {target} is not writable (read-only)")


def same_file(a, b) -> bool:
    """True when paths ``a`` and ``b`` name the same file (symbolic and hard links included)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_no_overwrite(outputs: Mapping[str, Optional[str]],
                       inputs: Mapping[str, Optional[str]]) -> None:
    """Raise ``DataError`` when an output path is an input path or another output path.

    Args:
        outputs: ``{option: path}`` of the files a command writes (None entries are skipped).
        inputs: ``{option: path}`` of the files it reads (``"input"`` for the positional).
    """
    outputs = {k: os.fspath(v) for k, v in outputs.items() if v is not None}
    inputs = {k: os.fspath(v) for k, v in inputs.items() if v is not None}
    for out_option, out_path in outputs.items():
        for in_option, in_path in inputs.items():
            if same_file(out_path, in_path):
                of = "" if in_option == "input" else f" of {in_option}"
                raise DataError(f"{out_option} {out_path} is the input file{of}: refusing to "
                                "overwrite an input; choose another output path")
    names = list(outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if same_file(outputs[first], outputs[second]):
                raise DataError(f"{first} and {second} are the same file ({outputs[first]}); "
                                "give them different paths")
