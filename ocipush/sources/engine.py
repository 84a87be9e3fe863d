"""``docker-daemon:IMAGE`` and ``containers-storage:IMAGE`` — an image in a local engine.

An engine's image store is not ours to read, so we ask the engine for the image the
way a user would: ``docker save IMAGE`` or ``podman save --format docker-archive
IMAGE``, its output spooled to a temporary file in ``$TMPDIR`` (one copy of the image
on disk, deleted by ``close()``), then read as a ``docker-archive:``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from typing import IO

from ..errors import SourceError, local_io_error
from ..reference import SourceSpec
from .docker_archive import DockerArchive
from .tarindex import open_tar

__all__ = ["SAVE_COMMANDS", "save_image"]

SAVE_COMMANDS = {
    "docker-daemon": ("docker", "save"),
    "containers-storage": ("podman", "save", "--format", "docker-archive"),
}


def save_image(spec: SourceSpec) -> DockerArchive:
    """``docker save`` (or podman's) the spec's IMAGE to a temporary file and read it."""
    transport, image, name = spec.transport, spec.path, str(spec)
    command, *args = SAVE_COMMANDS[transport]
    executable = shutil.which(command)
    if executable is None:
        raise SourceError(f"{transport}: the {command} command is not installed")
    try:
        # Not a with: the archive returned owns the file and deletes it when closed.
        temp = tempfile.NamedTemporaryFile(prefix="ocipush-", suffix=".tar")  # noqa: SIM115
    except OSError as e:
        raise local_io_error(tempfile.gettempdir(), f"spooling {command} save {image}", e) from None
    try:
        _save(executable, [*args, image], temp, f"{name}: {command} {' '.join(args)} {image}")
    except BaseException:
        temp.close()
        raise
    return DockerArchive(open_tar(temp.name, f"{command} save {image}", temp=temp), name=name)


def _save(executable: str, args: list[str], out: IO[bytes], what: str) -> None:
    try:
        result = subprocess.run([executable, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
    except OSError as e:
        raise SourceError(f"{what}: cannot run {executable}: {e.strerror}") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        last = f": {lines[-1].strip()}" if lines else ""
        raise SourceError(f"{what} failed (exit {result.returncode}){last}")
