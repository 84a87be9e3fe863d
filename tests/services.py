"""Real services for integration tests: a CNCF distribution registry, nginx in
front of it (limiting request bodies the way serverless registries do), and
skopeo as an independent reference client.

Everything listens on free loopback ports and keeps all of its state (config,
storage, pid, logs, temp files) in a directory the caller provides, so tests
never touch system paths and several instances can run side by side.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "run `make test` or `scripts/install-deps.sh` to install it"

# What a serverless registry in front of us advertises; ocipush must honour it.
DEFAULT_CHUNK_HEADERS: Mapping[str, str] = {
    "OCI-Chunk-Max-Length": "8000000",
    "OCI-Chunk-Min-Length": "1048576",
}

# nginx's own counters, for ProxyService.requests(); not logged.
_STATUS_PATH = "/_ocipush_tests_status"

# Loopback only: ignore any http(s)_proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MissingTool(RuntimeError):
    """A system binary the integration tests need is not installed."""


class ServiceError(RuntimeError):
    """A service did not start or misbehaved; the message carries its log tail."""


def find_tool(name: str) -> str:
    # nginx lives in /usr/sbin, which is not on a normal user's PATH.
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        raise MissingTool(f"`{name}` is not on PATH nor in /usr/sbin; {INSTALL_HINT}")
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_repo(prefix: str = "test") -> str:
    """A repository name no other test uses, so tests cannot see each other's pushes."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    if not re.fullmatch(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*", name):
        raise ValueError(f"{name!r} is not a valid repository name (lowercase, digits, . _ - /)")
    return name


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _deep_merge(base: dict, extra: Mapping) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Service:
    """A child process whose output goes to a log file; a context manager that stops it."""

    name = "service"

    def __init__(self, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # A session of its own: Ctrl-C in the terminal reaches pytest, which
            # tears fixtures down, instead of killing services mid-test; and
            # stop() can kill the whole group (nginx workers included).
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def diagnostics(self) -> str:
        return f"--- tail of {self.log_path}:\n{log_tail(self.log_path)}"

    def error(self, message: str) -> ServiceError:
        return ServiceError(f"{self.name}: {message}\n{self.diagnostics()}")

    def wait_ready(self, url: str, timeout: float) -> None:
        """Poll url until it answers below 500 (401 means "up, wants auth")."""
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.error(f"exited with code {self.process.returncode} while starting")
            try:
                with _http.open(url, timeout=1):
                    return
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    return
                last = f"HTTP {error.code}"
            except OSError as error:
                last = str(error)
            time.sleep(0.05)
        raise self.error(f"GET {url} did not answer within {timeout:g}s (last: {last})")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                # The group id stays ours until the leader is reaped below.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class RegistryService(Service):
    """`docker-registry serve` with filesystem storage and deletes enabled."""

    name = "docker-registry"

    def __init__(self, workdir: Path, extra_config: Mapping | None = None):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "config.yml"
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        # JSON is YAML, so no YAML library is needed.
        self.config_path.write_text(json.dumps(_deep_merge(config, extra_config or {}), indent=2))
        # The registry reads REGISTRY_<SECTION>_<KEY> variables as config
        # overrides; a stray REGISTRY_AUTH_FILE (set by podman/skopeo users)
        # makes it refuse to start. The registry only logs to stderr.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        argv = [find_tool("docker-registry"), "serve", str(self.config_path)]
        super().__init__(argv, workdir / "registry.log", env)


def start_registry(
    workdir: Path, extra_config: Mapping | None = None, *, timeout: float = 20.0
) -> RegistryService:
    """Start a registry with state in workdir; extra_config is merged into its config."""
    registry = RegistryService(workdir, extra_config)
    try:
        registry.wait_ready(f"{registry.url}/v2/", timeout)
    except BaseException:
        registry.stop()
        raise
    return registry


@dataclass(frozen=True)
class ProxiedRequest:
    """One line of the proxy's access log.

    A client probing TLS on the plain-HTTP port (skopeo does, before falling
    back to http) shows up as status 400 with an empty method and path.
    """

    method: str
    path: str
    query: str
    status: int
    body_length: int | None  # the Content-Length header; None when absent (chunked)
    request_length: int  # bytes nginx read: request line, headers and body
    upstream_status: int | None  # None when nginx answered by itself (e.g. 413)
    content_range: str | None

    @classmethod
    def from_log(cls, line: str) -> ProxiedRequest:
        fields = json.loads(line)
        path, _, query = fields["uri"].partition("?")
        upstream = fields["upstream_status"]
        return cls(
            method=fields["method"],
            path=path,
            query=query,
            status=int(fields["status"]),
            body_length=int(fields["content_length"]) if fields["content_length"] else None,
            request_length=int(fields["request_length"]),
            upstream_status=int(upstream) if upstream.isdigit() else None,
            content_range=fields["content_range"] or None,
        )


def _nginx_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProxyService(Service):
    """nginx in front of a registry, with a request-body limit."""

    name = "nginx"

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        client_max_body_size: str = "8m",
        headers: Mapping[str, str] | None = DEFAULT_CHUNK_HEADERS,
    ):
        self.upstream = upstream
        self.client_max_body_size = client_max_body_size
        self.headers = dict(headers or {})
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.prefix = workdir
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        self.config_path = workdir / "nginx.conf"
        self.config_path.write_text(self._config())
        argv = [
            find_tool("nginx"),
            "-p", str(workdir),
            # -e: the compiled-in error log may be an unwritable system path,
            # and nginx opens it before reading the config.
            "-e", str(self.error_log),
            "-c", str(self.config_path),
            "-g", "daemon off;",
        ]
        super().__init__(argv, workdir / "nginx.out", env=None)

    def _config(self) -> str:
        d = self.prefix
        add_headers = "".join(
            f"            add_header {name} {_nginx_string(value)} always;\n"
            for name, value in self.headers.items()
        )
        # As root, nginx would switch its workers to `nobody`, who cannot use
        # our 0700 temp dirs; the directive is an error-log warning otherwise.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""\
{user}# stub_status counters are exact with one worker; requests() relies on them.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    # Every temp path explicitly: the compiled-in ones are system directories.
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;

    log_format requests escape=json '{{"method":"$request_method","uri":"$request_uri",'
        '"status":"$status","request_length":"$request_length",'
        '"content_length":"$content_length","upstream_status":"$upstream_status",'
        '"content_range":"$http_content_range"}}';
    access_log {d}/access.log requests;

    server {{
        listen {self.host};
        # Checked against Content-Length before any of the body is read, and
        # while reading a chunked body (after part of it was already streamed
        # upstream); either way the client gets nginx's own 413.
        client_max_body_size {self.client_max_body_size};
        client_body_timeout 300s;
        send_timeout 300s;

        location = {_STATUS_PATH} {{
            stub_status;
            access_log off;
        }}

        location / {{
            # No URI part: the request URI goes upstream untouched (digests,
            # the registry's signed _state query).
            proxy_pass http://{self.upstream};
            # Stream bodies like a serverless front end instead of spooling them.
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_http_version 1.1;
            # The registry builds absolute Location URLs from Host: keep ours so
            # clients come back through the proxy.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 10s;
            proxy_send_timeout 300s;
            proxy_read_timeout 300s;
{add_headers}        }}
    }}
}}
"""

    def diagnostics(self) -> str:
        return f"{super().diagnostics()}\n--- tail of {self.error_log}:\n{log_tail(self.error_log)}"

    def _wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until nginx has no request in flight, so all are in the access log.

        nginx logs a request when it frees it, which can be well after the
        client got the response: after a 413 it keeps reading and discarding
        the rest of the body (lingering close). stub_status counts a request
        until it is freed, in the same worker step that logs it; the status
        request itself is the one left "Writing".
        """
        deadline = time.monotonic() + timeout
        while True:
            with _http.open(f"{self.url}{_STATUS_PATH}", timeout=5) as response:
                status = response.read().decode()
            reading, writing = map(int, re.search(r"Reading: (\d+) Writing: (\d+)", status).groups())
            if reading == 0 and writing == 1:
                return
            if time.monotonic() > deadline:
                raise self.error(f"requests still in flight after {timeout:g}s:\n{status}")
            time.sleep(0.01)

    def mark(self) -> int:
        """A position in the access log; pass it to requests() to see only later requests."""
        self._wait_idle()
        return self.access_log.stat().st_size

    def requests(self, since: int = 0) -> list[ProxiedRequest]:
        """Requests completed after mark() returned `since`, oldest first.

        Waits for requests in flight (e.g. from another thread) to finish.
        """
        self._wait_idle()
        with open(self.access_log, "rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [ProxiedRequest.from_log(line) for line in lines]


def start_proxy(
    workdir: Path,
    upstream: RegistryService | str,
    *,
    client_max_body_size: str = "8m",
    headers: Mapping[str, str] | None = DEFAULT_CHUNK_HEADERS,
    timeout: float = 20.0,
) -> ProxyService:
    """Start nginx in front of upstream (a registry or "host:port").

    headers are added to every response; None or {} adds none.
    """
    host = upstream.host if isinstance(upstream, RegistryService) else upstream
    proxy = ProxyService(workdir, host, client_max_body_size, headers)
    try:
        proxy.wait_ready(f"{proxy.url}/v2/", timeout)
    except BaseException:
        proxy.stop()
        raise
    return proxy


# --- skopeo ---------------------------------------------------------------

_TRANSPORT = re.compile(r"(docker|oci|oci-archive|dir|docker-archive|docker-daemon|containers-storage):")


@functools.cache
def _skopeo_home() -> Path:
    """Policy, auth and registries files of our own, so no user or system config applies."""
    home = Path(tempfile.mkdtemp(prefix="ocipush-skopeo-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    (home / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    (home / "auth.json").write_text("{}")
    # No mirrors, no short names: refs always mean exactly the loopback host given.
    (home / "registries.conf").write_text("")
    return home


def _skopeo_env() -> dict[str, str]:
    home = _skopeo_home()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["REGISTRY_AUTH_FILE"] = str(home / "auth.json")
    env["CONTAINERS_REGISTRIES_CONF"] = str(home / "registries.conf")
    return env


@functools.cache
def _supports_retry_times(command: str) -> bool:
    result = subprocess.run(
        [find_tool("skopeo"), command, "--help"], capture_output=True, text=True, env=_skopeo_env()
    )
    return "--retry-times" in result.stdout


def _skopeo(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    # No retries: a failing request must fail the test the first time.
    retry = ["--retry-times", "0"] if _supports_retry_times(command) else []
    argv = [find_tool("skopeo"), "--policy", str(_skopeo_home() / "policy.json"), command, *retry, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=_skopeo_env(), timeout=300)


def skopeo_copy(src: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`skopeo copy src dst` over plain HTTP for docker:// sides; never raises on failure."""
    tls = []
    if src.startswith("docker://"):
        tls.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        tls.append("--dest-tls-verify=false")
    return _skopeo("copy", *tls, *extra, src, dst)


def skopeo_pull(ref: str, dest_dir: Path) -> Path:
    """Copy docker://ref into the OCI layout dest_dir as `pulled`; AssertionError on failure."""
    result = skopeo_copy(f"docker://{ref}", f"oci:{dest_dir}:pulled")
    if result.returncode != 0:
        raise AssertionError(f"skopeo could not pull {ref}:\n{result.stderr}")
    return dest_dir


def skopeo_inspect(ref: str, raw: bool = False) -> dict:
    """Parsed `skopeo inspect [--raw]` output; ref without a transport means docker://."""
    if not _TRANSPORT.match(ref):
        ref = f"docker://{ref}"
    result = _skopeo("inspect", "--tls-verify=false", *(["--raw"] if raw else []), ref)
    if result.returncode != 0:
        raise AssertionError(f"skopeo could not inspect {ref}:\n{result.stderr}")
    return json.loads(result.stdout)
