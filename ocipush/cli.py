"""``ocipush SOURCE DESTINATION``: argument parsing and error printing, nothing more."""

from __future__ import annotations

import argparse
import getpass
import math
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from .__version__ import __version__
from .cache import BlobCache
from .compression import FORMATS, Compression
from .destinations import parse_destination
from .errors import LocalIOError, OcipushError, UsageError
from .localfile import file_kind
from .push import PushOptions, push
from .reference import parse_source, reads_stdin
from .registry.auth import Credentials
from .registry.client import ClientOptions
from .registry.credentials import check_authfile
from .registry.retry import RetryPolicy
from .registry.transport import Interrupted
from .report import LineReporter, ProgressReporter, Reporter, plan_text, summary_json
from .resume import UploadRecords
from .units import parse_duration, parse_size

__all__ = ["main"]

EPILOG = """\
sources (containers-transports(5) names):
  oci:PATH[:REF]                  an OCI image layout; REF: a ref name, @sha256:… or @N
  oci-archive:PATH[:REF]          a tar of an OCI layout (skopeo, podman, buildkit type=oci)
  docker-archive:PATH[:TAG|@N]    docker save / podman save / buildkit type=docker output,
                                  any generation; the tar may be gzip-, xz- or zstd-compressed
  docker-daemon:IMAGE             runs `docker save IMAGE` and reads the result
  containers-storage:IMAGE        runs `podman save IMAGE` and reads the result
  dir:PATH                        skopeo's dir: / podman save --format docker-dir (whole
                                  rest is the path; signatures are not pushed)
  docker-archive:-, oci-archive:- the archive on standard input (docker save IMG | ocipush
                                  docker-archive:- DEST), spooled to $TMPDIR; a file named
                                  - is ./-
  docker://HOST/REPO[:TAG|@DIGEST]
                                  an image on a registry, streamed blob by blob (an index
                                  whole); options --src-creds, --src-authfile,
                                  --src-tls-verify, --src-cert-dir

destinations:
  [docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry
  oci:PATH[:TAG]                              an OCI layout, created or added to
  oci-archive:PATH[:TAG]                      an OCI archive, written (or replaced) whole
  docker-archive:PATH[:REPO[:TAG]]            an archive for docker load (20.10+) and podman load,
                                              one image (see --platform), zstd layers made gzip

exit codes: 0 pushed, 1 other error, 2 bad usage, 3 bad source, 4 registry error,
5 authentication failed, 6 a local file could not be written (TMPDIR, destination),
130 interrupted (SIGINT), 143 terminated (SIGTERM).

resume: an upload cut short (killed, or retries exhausted on a network or server failure)
is recorded in $XDG_CACHE_HOME/ocipush/uploads; running the same command again goes on
where the registry stands instead of sending the blob again (--no-resume: start over).

limits: every request has a total deadline (--timeout, plus 1s per 64 KiB of the chunk it
sends) and a read may wait 120s at most; registry answers are read up to a limit by purpose.
On SIGINT or SIGTERM the requests in flight are stopped, open uploads are DELETEd (kept for
a later run with --keep-partial), and the exit is 130 or 143; a second signal exits at once.
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _number(text: str, low: int, high: int) -> int:
    """An integer from ``low`` to ``high`` in ASCII digits: ``int()`` alone takes ``²``
    (then fails), ``٣`` and 5,000-digit strings (then fails on the length limit)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not low <= int(text) <= high:
        shown = text if len(text) <= 40 else f"{text[:40]}… ({len(text)} characters)"
        raise argparse.ArgumentTypeError(f"expected a number from {low} to {high}, not {shown!r}")
    return int(text)


def _count(text: str) -> int:
    return _number(text, 0, 100)


def _timeout(text: str) -> float:
    """A ``--timeout``: a duration, finite and above zero (0 would fail every request)."""
    value = _duration(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above zero such as 30s or 5m, not {text!r}")
    return value


def _jobs(text: str) -> int:
    return _number(text, 1, 64)


def _level(text: str) -> int:
    """ASCII digits; the range depends on the format, so compression.check_level checks it."""
    try:
        return _number(text, 0, 999)
    except argparse.ArgumentTypeError:
        shown = text if len(text) <= 40 else f"{text[:40]}… ({len(text)} characters)"
        raise argparse.ArgumentTypeError(f"expected a level such as 6 (gzip 1-9, zstd 1-22), not {shown!r}") from None


def _duration(text: str) -> float:
    """Seconds, from Go's syntax as podman takes it (``2s``, ``500ms``, ``1m30s``) or
    plain seconds; 0 to 24 hours. Shared by every duration option (``--retry-delay``,
    ``--timeout``)."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 too, but with usage noise
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ocipush",
        description="Push a container image from files to a registry, in chunks that fit its body limit.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="the image to push, e.g. oci:./layout:latest")
    p.add_argument("destination", help="where to push it, e.g. registry.example.com/team/img:tag")
    p.add_argument("--tls-verify", "--dest-tls-verify", type=_bool, nargs="?", const=True, default=None,
                   metavar="BOOL", help="verify TLS (default: true, unless registries.conf marks the registry "
                   "insecure); false also allows plain HTTP")
    p.add_argument("--cert-dir", "--dest-cert-dir", metavar="DIR",
                   help="CAs (*.crt) and client certificate (*.cert + *.key) (default: certs.d/HOST:PORT)")
    p.add_argument("--creds", "--dest-creds", metavar="USER[:PASS]", help="credentials for the registry")
    p.add_argument("--authfile", "--dest-authfile", metavar="FILE",
                   help="auth file to take credentials from (default: podman's, then docker's)")
    p.add_argument("--username", metavar="USER", help="user name, with --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--dest-no-creds", action="store_true",
                   help="access the registry anonymously: no credentials sent, none looked up")
    p.add_argument("--src-tls-verify", type=_bool, nargs="?", const=True, default=None, metavar="BOOL",
                   help="verify TLS of a docker:// source (default: true, unless registries.conf marks it insecure)")
    p.add_argument("--src-cert-dir", metavar="DIR", help="CAs and client certificate for a docker:// source")
    p.add_argument("--src-creds", metavar="USER[:PASS]", help="credentials for a docker:// source's registry")
    p.add_argument("--src-authfile", metavar="FILE",
                   help="auth file for a docker:// source (default: podman's, then docker's)")
    p.add_argument("--src-username", metavar="USER", help="user name for a docker:// source, with --src-password-stdin")
    p.add_argument("--src-password-stdin", action="store_true",
                   help="read the docker:// source's password from standard input")
    p.add_argument("--src-no-creds", action="store_true",
                   help="read a docker:// source anonymously: no credentials sent, none looked up")
    p.add_argument("--chunk-size", type=_size, metavar="SIZE",
                   help="largest request body, e.g. 50MB or 64MiB (default: the registry's limit)")
    p.add_argument("--jobs", "-j", type=_jobs, default=3, metavar="N", help="blobs uploaded at once (default 3)")
    p.add_argument("--compression-format", "--dest-compress-format", choices=FORMATS, metavar="FORMAT",
                   help="compress every layer not already in FORMAT (gzip, zstd or zstd:chunked) while uploading")
    p.add_argument("--compression-level", "--dest-compress-level", type=_level, metavar="N",
                   help="compression level (gzip 1-9, default 6; zstd and zstd:chunked 1-22, default 3)")
    p.add_argument("--format", "-f", choices=("oci", "v2s2"), dest="manifest_format",
                   help="manifest type to push (default: as the source has it; docker archives give oci)")
    p.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                   help="push only the image of this platform (repeatable: several give a new index "
                   "of just those), e.g. linux/arm64")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the recompression cache ($XDG_CACHE_HOME/ocipush)")
    p.add_argument("--retry", type=_count, default=3, metavar="N",
                   help="retries of each failed request (a chunk's resends and status checks share them), "
                   "and new uploads of a blob the registry lost (default 3)")
    p.add_argument("--retry-delay", type=_duration, default=1.0, metavar="DURATION",
                   help="first wait before a retry, doubled each time (default 1s)")
    p.add_argument("--timeout", type=_timeout, default=300.0, metavar="DURATION",
                   help="total time for one request, e.g. 30s or 2m (default 5m); a request that "
                   "sends a chunk gets 1s more per 64 KiB of it")
    p.add_argument("--keep-partial", action="store_true",
                   help="on SIGINT or SIGTERM, keep the open uploads for the next run to resume "
                   "(default: cancel them)")
    p.add_argument("--no-resume", action="store_true",
                   help="cancel the uploads an earlier run left instead of resuming them")
    p.add_argument("--digestfile", metavar="FILE", help="write the pushed manifest digest to FILE")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors and the result")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary instead of the reference")
    p.add_argument("--dry-run", action="store_true",
                   help="read the source and ask the registry what it has; print the plan, change nothing")
    p.add_argument("--version", action="version", version=f"ocipush {__version__}")
    return p


def _no_creds_conflicts(args: argparse.Namespace) -> None:
    """``--src-no-creds`` / ``--dest-no-creds`` with credentials for the same side: which one
    did the user mean? (skopeo refuses the same pairs.)"""
    sides = (("--src-no-creds", args.src_no_creds, (("--src-creds", args.src_creds), ("--src-authfile",
              args.src_authfile), ("--src-username", args.src_username))),
             ("--dest-no-creds", args.dest_no_creds, (("--creds", args.creds), ("--authfile", args.authfile),
              ("--username", args.username))))
    for flag, anonymous, others in sides:
        given = [name for name, value in others if value]
        if anonymous and given:
            raise UsageError(f"{flag} and {given[0]} contradict each other: give one of them")


def _src_credentials(args: argparse.Namespace) -> Credentials | None:
    """``--src-creds USER[:PASS]`` (a password asked on the terminal when missing), or
    ``--src-username`` with ``--src-password-stdin``."""
    if args.src_password_stdin:
        if not args.src_username:
            raise UsageError("--src-password-stdin needs --src-username")
        if args.src_creds:
            raise UsageError("give either --src-creds or --src-username with --src-password-stdin")
        if args.password_stdin:
            raise UsageError("only one password can come from standard input: "
                             "--password-stdin and --src-password-stdin were both given")
        return Credentials(args.src_username, sys.stdin.readline().rstrip("\r\n"), source="--src-password-stdin")
    if args.src_username:
        raise UsageError("--src-username needs --src-password-stdin (or use --src-creds USER:PASS)")
    if not args.src_creds:
        return None
    user, sep, password = args.src_creds.partition(":")
    if not user:
        raise UsageError("--src-creds: empty user name")
    if not sep:
        if not sys.stdin.isatty():
            raise UsageError("--src-creds has no password and there is no terminal to ask for one")
        password = getpass.getpass(f"Password for {user} (source): ")
    return Credentials(user, password, source="--src-creds")


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if args.password_stdin:
        if _source_reads_stdin(args.source):
            raise UsageError(f"--password-stdin and {args.source}: standard input can carry only one of them")
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        if args.creds:
            raise UsageError("give either --creds or --username with --password-stdin")
        return Credentials(args.username, sys.stdin.readline().rstrip("\r\n"), source="--password-stdin")
    if args.username:
        raise UsageError("--username needs --password-stdin (or use --creds USER:PASS)")
    if not args.creds:
        return None
    user, sep, password = args.creds.partition(":")
    if not user:
        raise UsageError("--creds: empty user name")
    if not sep:
        if not sys.stdin.isatty():
            raise UsageError("--creds has no password and there is no terminal to ask for one")
        password = getpass.getpass(f"Password for {user}: ")
    return Credentials(user, password, source="--creds")


def _source_reads_stdin(text: str) -> bool:
    try:
        return reads_stdin(parse_source(text))
    except UsageError:
        return False  # said by the push, with the rest of what is wrong with it


def run(argv: list[str] | None = None, records: list[UploadRecords] | None = None) -> int:
    """One push; ``records`` is given the record of open uploads (for ``main``'s last line)."""
    args = build_parser().parse_args(argv)
    _no_creds_conflicts(args)
    given = [flag for flag, value in (("--src-creds", args.src_creds), ("--src-authfile", args.src_authfile),
             ("--src-tls-verify", args.src_tls_verify), ("--src-cert-dir", args.src_cert_dir),
             ("--src-username", args.src_username), ("--src-no-creds", args.src_no_creds or None))
             if value is not None]
    if given and not args.source.startswith("docker://"):
        raise UsageError(f"{given[0]} is for a docker:// source, not {args.source}")
    resume = UploadRecords(resume=not args.no_resume, keep_partial=args.keep_partial)
    if records is not None:
        records.append(resume)
    options = PushOptions(
        chunk_size=args.chunk_size,
        jobs=args.jobs,
        compression=Compression(args.compression_format, args.compression_level),
        cache=None if args.no_cache else BlobCache(),
        retry=RetryPolicy(attempts=args.retry, delay=args.retry_delay),
        deadline=args.timeout,
        tls_verify=args.tls_verify,
        credentials=_credentials(args),
        authfile=args.authfile,
        cert_dir=args.cert_dir,
        dry_run=args.dry_run,
        manifest_format=args.manifest_format,
        platforms=tuple(args.platform),
        anonymous=args.dest_no_creds,
        source_client=ClientOptions(tls_verify=args.src_tls_verify, credentials=_src_credentials(args),
                                    anonymous=args.src_no_creds,
                                    authfile=args.src_authfile, cert_dir=args.src_cert_dir, deadline=args.timeout),
        resume=resume,
    )
    if args.authfile:
        check_authfile(args.authfile)  # as podman: before anything else
    if args.src_authfile:
        check_authfile(args.src_authfile)
    if args.digestfile:
        _check_writable(args.digestfile)  # before the push: afterwards the tag already moved
    if args.quiet or args.json:
        reporter = Reporter()
    elif sys.stderr.isatty():
        reporter = ProgressReporter(sys.stderr)
    else:
        reporter = LineReporter(sys.stderr)
    try:
        result = push(args.source, parse_destination(args.destination), options, reporter)
    finally:
        reporter.close()
    if args.digestfile and result.digest and not result.dry_run:
        _write_digestfile(args.digestfile, str(result.digest))
    if args.json:
        print(summary_json(result))
    elif result.dry_run:
        print(plan_text(result))
    else:
        print(result.reference)
    return 0


def _check_writable(path: str) -> None:
    """``--digestfile``, before the push (afterwards the tag already moved): its directory
    exists, it is writable, and it is a regular file, a character device (``/dev/null``,
    a terminal) or our own stdout or stderr (``/dev/stdout`` in a pipeline).  A named FIFO
    would block the write until some reader comes, a socket or a directory cannot be
    written: refused."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--digestfile {path}: directory {folder} does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"--digestfile {path}: {e.strerror}") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode) or _is_our_output(st)):
        raise UsageError(f"--digestfile {path}: {file_kind(st.st_mode)}, not a file the digest can be written to")
    if not os.access(path if st is not None else folder, os.W_OK):
        raise UsageError(f"--digestfile {path}: not writable")


def _is_our_output(st: os.stat_result) -> bool:
    """Whether ``st`` is this process's stdout or stderr (``/dev/stdout`` on a pipe)."""
    for fd in (1, 2):
        try:
            mine = os.fstat(fd)
        except OSError:
            continue
        if (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _write_digestfile(path: str, digest: str) -> None:
    """After the push: opened without blocking (a FIFO put there since the check fails
    with ENXIO instead of waiting for a reader); a failure is exit 6, saying the image is
    pushed all the same."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(digest)
    except OSError as e:
        raise LocalIOError(f"--digestfile {path}: {e.strerror or e} (the image was pushed as {digest})",
                           path=path, errno=e.errno) from None


def _printable(text: str) -> str:
    """One line, with anything a terminal would act on (file names, server text) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    records: list[UploadRecords] = []
    with _signals() as said:
        try:
            return run(argv, records)
        except OcipushError as e:
            print(f"ocipush: {_printable(str(e))}{_kept(records)}", file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt as e:  # Interrupted, once the push below has cancelled what it had open
            stopped = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
            said.set()
            print(f"ocipush: {stopped.message}{_kept(records)}", file=sys.stderr)
            return stopped.exit_code


def _kept(records: list[UploadRecords]) -> str:
    """The end of a failed push's one line when it left uploads open for a later run."""
    kept = sum(r.kept() for r in records)
    if not kept:
        return ""
    uploads = "upload" if kept == 1 else "uploads"
    return f"; {kept} partial {uploads} kept: run the same command again to resume"


@contextmanager
def _signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread, where the push stops its
    requests and cancels its uploads on the way out; a second signal exits at once.  The
    event is set once the one line was printed, so the second signal does not print another."""
    said = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield said  # signal handlers belong to the main thread
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:
            if not said.is_set():
                os.write(2, f"ocipush: {Interrupted(signum).message}\n".encode())
            os._exit(128 + signum)
        received.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield said
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def entry_point() -> None:
    code = main()
    if code in (130, 143):
        # Interrupted: requests were stopped and open uploads cancelled; upload threads
        # stuck on a silent registry must not keep the process alive until their timeout.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
