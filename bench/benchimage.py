"""Benchmark images, written once and cached: a realistic ~1 GiB three-layer OCI layout,
or a layout with one layer of a given size (for the peak-RSS check).

The realistic image has three gzip layers, compressed at level 6 like docker's:

1. a real filesystem tree copied from this machine (/usr/lib/python3*, /usr/share/…,
   /usr/bin, … until the byte budget is reached): Python sources and bytecode, docs,
   gzipped man pages, locale catalogues, ELF binaries;
2. a large synthetic tree of many small files (60,000 at full size, log-uniform sizes
   from 64 B to 32 KiB; text, structured binary and random);
3. one big half-random file: 1 MiB blocks alternating random bytes and compressible text.

Layers are written by one process each (tar → gzip, both hashed on the way, nothing held
in memory) and are reproducible on a given machine: the same arguments give the same
bytes (layer 1 depends on the files of the machine it was built on).  The gzip stream is
zlib's, or pigz's when pigz is on PATH (faster to build, same decompression cost).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

GEN_VERSION = 1  # bump when the generated content changes, to invalidate caches
GZIP_LEVEL = 6
EPOCH = 1700000000
REF = "bench"
BLOCK = 1 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# Real trees for layer 1, in this order; each is walked in sorted order.
REAL_ROOTS = (
    *sorted(glob.glob("/usr/lib/python3*")),
    "/usr/share/perl",
    "/usr/share/man",
    "/usr/share/doc",
    "/usr/share/locale",
    "/usr/share/vim",
    "/usr/bin",
    "/usr/share/i18n",
    "/usr/share/icons",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/share",
    "/usr/lib",
)

WORDS = [
    "def",
    "return",
    "self",
    "import",
    "from",
    "class",
    "if",
    "else",
    "elif",
    "for",
    "while",
    "in",
    "not",
    "and",
    "or",
    "None",
    "True",
    "False",
    "try",
    "except",
    "raise",
    "with",
    "as",
    "yield",
    "lambda",
    "pass",
    "break",
    "continue",
    "async",
    "await",
    "print",
    "len",
    "range",
    "dict",
    "list",
    "set",
    "tuple",
    "str",
    "int",
    "float",
    "bytes",
    "value",
    "result",
    "data",
    "path",
    "name",
    "config",
    "request",
    "response",
    "error",
    "status",
    "=",
    "==",
    "!=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    ".",
    "+",
    "-",
    "*",
    "/",
    "0",
    "1",
    "2",
    "3",
    "16",
    "64",
    "256",
    "1024",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
]


# -- gzip sink -----------------------------------------------------------------------


class LayerSink:
    """Write-only file for tarfile: hashes the tar, gzips it (zlib or pigz) to ``path``.
    Writes are gathered into 1 MiB blocks so the compressor is not called per header."""

    def __init__(self, path: Path, level: int = GZIP_LEVEL):
        self.path = path
        self.out = open(path, "wb")  # noqa: SIM115 - closed by close(), the writer's own end
        self.tar_sha = hashlib.sha256()
        self.tar_size = 0
        self.pending = bytearray()
        pigz = shutil.which("pigz")
        self.proc = None
        if pigz:
            self.proc = subprocess.Popen([pigz, f"-{level}", "-n", "-c"], stdin=subprocess.PIPE, stdout=self.out)
        else:
            self.comp = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.gzip_tool = "pigz" if pigz else "zlib"

    def write(self, data) -> int:
        self.tar_sha.update(data)
        self.tar_size += len(data)
        self.pending += data
        if len(self.pending) >= BLOCK:
            self._emit(bytes(self.pending))
            self.pending.clear()
        return len(data)

    def tell(self) -> int:
        return self.tar_size

    def _emit(self, data: bytes) -> None:
        if self.proc:
            self.proc.stdin.write(data)
        else:
            self.out.write(self.comp.compress(data))

    def close(self) -> dict:
        self._emit(bytes(self.pending))
        self.pending.clear()
        if self.proc:
            self.proc.stdin.close()
            if self.proc.wait() != 0:
                raise RuntimeError("pigz failed")
        else:
            self.out.write(self.comp.flush())
        self.out.close()
        blob_sha, size = hashlib.sha256(), 0
        with open(self.path, "rb") as f:
            while block := f.read(BLOCK):
                blob_sha.update(block)
                size += len(block)
        return {
            "digest": "sha256:" + blob_sha.hexdigest(),
            "size": size,
            "diff_id": "sha256:" + self.tar_sha.hexdigest(),
            "tar_size": self.tar_size,
            "gzip": self.gzip_tool,
        }


def _tarinfo(name: str, type_: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = type_, mode, size, EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class _Bytes:
    """A file-like view of bytes, for tar.addfile."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos : end].tobytes()
        self.pos += len(out)
        return out


class TextSource:
    """Compressible text: whole lines picked from a seeded pool (fast, gzip ~4-5x)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lines = [
            ("    " * rng.randint(0, 3) + " ".join(rng.choices(WORDS, k=rng.randint(3, 14))) + "\n").encode()
            for _ in range(8192)
        ]

    def take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += b"".join(self.rng.choices(self.lines, k=max(1, min(4096, (n - len(out)) // 30 + 1))))
        return bytes(out[:n])


# -- the three layers ----------------------------------------------------------------


def _real_tree(tar: tarfile.TarFile, budget: int) -> dict:
    """Regular files, symlinks and directories from REAL_ROOTS until ``budget`` bytes of
    file content; ownership normalised to root, everything else as on disk."""
    seen: set[str] = set()
    total = files = 0

    def add(path: str) -> int:
        if path in seen:
            return 0
        seen.add(path)
        try:
            st = os.lstat(path)
        except OSError:
            return 0
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return 0
        # Parents first, as tar tools write them.
        parent = os.path.dirname(path)
        if parent not in ("/", "") and parent not in seen:
            add(parent)
        info = tar.gettarinfo(path, arcname=path.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isreg():
            try:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            except OSError:
                return 0
            return info.size
        tar.addfile(info)
        return 0

    for root in REAL_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            add(dirpath)
            for name in sorted(filenames):
                size = add(os.path.join(dirpath, name))
                if size:
                    total += size
                    files += 1
                if total >= budget:
                    return {"files": files, "content": total}
    return {"files": files, "content": total}


def _small_files(tar: tarfile.TarFile, count: int, rng: random.Random) -> dict:
    """``count`` files, log-uniform sizes 64 B .. 32 KiB: 55 % text, 30 % structured
    binary (records from a pool with random fields), 15 % random."""
    text = TextSource(rng)
    records = [rng.randbytes(24) for _ in range(2048)]
    total = 0
    made_dirs: set[str] = set()
    for i in range(count):
        d1, d2 = f"srv/app/pkg{i // 2000:03d}", f"srv/app/pkg{i // 2000:03d}/mod{i // 100 % 20:02d}"
        for d in ("srv", "srv/app", d1, d2):
            if d not in made_dirs:
                made_dirs.add(d)
                tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        size = int(64 * (512 ** rng.random()))
        kind = rng.random()
        if kind < 0.55:
            data, ext = text.take(size), rng.choice(("py", "js", "txt", "json", "md", "c", "h"))
        elif kind < 0.85:
            n = size // 32 + 1
            picks = rng.choices(records, k=n)
            fields = rng.randbytes(8 * n)
            data = b"".join(p + fields[8 * j : 8 * j + 8] for j, p in enumerate(picks))[:size]
            ext = rng.choice(("so", "pyc", "db", "bin", "dat"))
        else:
            data, ext = rng.randbytes(size), rng.choice(("png", "jpg", "gz", "woff2"))
        tar.addfile(_tarinfo(f"{d2}/f{i:05d}.{ext}", tarfile.REGTYPE, 0o644, len(data)), _Bytes(data))
        total += len(data)
    return {"files": count, "content": total}


class HalfRandom:
    """File content: 1 MiB blocks alternating seeded random bytes and compressible text."""

    def __init__(self, size: int, rng: random.Random):
        self.left = size
        self.rng = rng
        self.text = TextSource(rng)
        self.n = 0
        self.pending = b""

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.left
        out = bytearray()
        while len(out) < n and self.left > 0:
            if not self.pending:
                want = min(BLOCK, self.left)
                self.pending = self.rng.randbytes(want) if self.n % 2 == 0 else self.text.take(want)
                self.n += 1
                self.left -= want
            take = self.pending[: n - len(out)]
            out += take
            self.pending = self.pending[len(take) :]
        return bytes(out)


def _big_file(tar: tarfile.TarFile, size: int, rng: random.Random, name: str) -> dict:
    tar.addfile(_tarinfo("data", tarfile.DIRTYPE, 0o755))
    tar.addfile(_tarinfo(f"data/{name}", tarfile.REGTYPE, 0o644, size), HalfRandom(size, rng))
    return {"files": 1, "content": size}


def write_layer(kind: str, amount: int, blobs_dir: str, seed: str) -> dict:
    """One gzip layer (a worker process runs this); returns its descriptor facts."""
    rng = random.Random(f"{seed}/{kind}/{amount}")
    tmp = Path(blobs_dir) / f".tmp-{kind}-{os.getpid()}"
    sink = LayerSink(tmp)
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=BLOCK) as tar:
        if kind == "real":
            facts = _real_tree(tar, amount)
        elif kind == "small":
            facts = _small_files(tar, amount, rng)
        elif kind == "big":
            facts = _big_file(tar, amount, rng, "half-random.bin")
        else:
            raise ValueError(kind)
    layer = sink.close()
    os.replace(tmp, Path(blobs_dir) / layer["digest"].removeprefix("sha256:"))
    return {**layer, "kind": kind, **facts}


# -- layouts -------------------------------------------------------------------------


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _put_blob(blobs: Path, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _finish_layout(layout: Path, layers: list[dict]) -> dict:
    blobs = layout / "blobs" / "sha256"
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": f"bench layer {layer['kind']}"} for layer in layers
        ],
    }
    cfg = _put_blob(blobs, _json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **cfg},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer["digest"], "size": layer["size"]} for layer in layers],
    }
    man = _put_blob(blobs, _json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, **man, "annotations": {"org.opencontainers.image.ref.name": REF}}],
    }
    (layout / "index.json").write_bytes(_json(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return {"manifest": man["digest"], "config": cfg}


def _cached(layout: Path, spec: dict) -> dict | None:
    try:
        meta = json.loads((layout / "bench-meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("spec") != spec:
        return None
    for layer in meta["layers"]:
        path = layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
        if not path.is_file() or path.stat().st_size != layer["size"]:
            return None
    return meta


def build(layout: Path, jobs: list[tuple[str, int]], seed: str, log=print) -> dict:
    """Write (or reuse) an OCI layout at ``layout`` with one gzip layer per (kind, amount)."""
    spec = {"version": GEN_VERSION, "level": GZIP_LEVEL, "layers": [list(j) for j in jobs], "seed": seed}
    meta = _cached(layout, spec)
    if meta:
        log(f"image: reusing {layout}")
        return meta
    if layout.exists():
        shutil.rmtree(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    log(f"image: writing {layout} ({', '.join(f'{k} {a}' for k, a in jobs)}) with gzip -{GZIP_LEVEL} …")
    if len(jobs) == 1:
        layers = [write_layer(*jobs[0], str(blobs), seed)]
    else:
        workers = max(1, min(len(jobs), os.cpu_count() or 1))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            layers = list(pool.map(write_layer, *zip(*[(k, a, str(blobs), seed) for k, a in jobs], strict=True)))
    meta = {"spec": spec, "layout": str(layout), "ref": REF, "layers": layers, **_finish_layout(layout, layers)}
    (layout / "bench-meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def realistic(workdir: Path, scale: float = 1.0, log=print) -> dict:
    """The ~1 GiB three-layer image (``scale`` shrinks it for --quick)."""
    jobs = [
        ("real", int(340e6 * scale)),
        ("small", max(100, int(60_000 * scale))),
        ("big", int(320 * (1 << 20) * scale)),
    ]
    name = "image-full" if scale == 1.0 else f"image-x{scale:g}"
    return build(workdir / name, jobs, "bench", log)


def single_layer(workdir: Path, size: int, label: str, log=print) -> dict:
    """One layer holding one half-random file of ``size`` bytes."""
    return build(workdir / f"layer-{label}", [("big", size)], f"single/{size}", log)


def build_many(specs: list[tuple[Path, list[tuple[str, int]], str]], log=print) -> list[dict]:
    """Several single-layer layouts at once (one process per layer, all cores busy)."""
    todo = [
        (layout, jobs, seed)
        for layout, jobs, seed in specs
        if not _cached(
            layout, {"version": GEN_VERSION, "level": GZIP_LEVEL, "layers": [list(j) for j in jobs], "seed": seed}
        )
    ]
    if len(todo) > 1:
        workers = max(1, min(len(todo), os.cpu_count() or 1))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_build_quiet, todo))
    return [build(layout, jobs, seed, log) for layout, jobs, seed in specs]


def _build_quiet(args) -> dict:
    layout, jobs, seed = args
    return build(layout, jobs, seed, log=lambda *a: None)


def docker_archive(image: dict, path: Path, log=print) -> dict:
    """The ``docker save`` form of ``image`` (an OCI layout made by ``build``): one tar with
    ``manifest.json``, the config and each layer **uncompressed** as ``<n>/layer.tar`` —
    what ``docker save`` writes, so a push must compress every layer on the way. Cached
    next to the layout; returns {"path", "ref", "tar_size"}."""
    blobs = Path(image["layout"]) / "blobs" / "sha256"
    meta_path = path.with_suffix(".json")
    spec = {"manifest": image["manifest"], "version": 1}
    with_meta = {"path": str(path), "ref": f"{REF}:latest", **spec}
    try:
        if json.loads(meta_path.read_text()) == {**with_meta, "tar_size": path.stat().st_size}:
            log(f"docker archive: reusing {path}")
            return {**with_meta, "tar_size": path.stat().st_size}
    except (OSError, ValueError):
        pass
    log(f"docker archive: writing {path} (uncompressed layers) …")
    config_digest = image["config"]["digest"].removeprefix("sha256:")
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        names = []
        for n, layer in enumerate(image["layers"]):
            name = f"{n}/layer.tar"
            info = _tarinfo(name, tarfile.REGTYPE, 0o644, layer["tar_size"])
            with subprocess.Popen(
                ["gzip", "-dc", str(blobs / layer["digest"].removeprefix("sha256:"))], stdout=subprocess.PIPE
            ) as gz:
                tar.addfile(info, gz.stdout)
            if gz.returncode != 0:
                raise RuntimeError(f"gzip -dc failed on {layer['digest']}")
            names.append(name)
        config = (blobs / config_digest).read_bytes()
        tar.addfile(_tarinfo(f"{config_digest}.json", tarfile.REGTYPE, 0o644, len(config)), _Bytes(config))
        manifest = _json([{"Config": f"{config_digest}.json", "RepoTags": [f"{REF}:latest"], "Layers": names}])
        tar.addfile(_tarinfo("manifest.json", tarfile.REGTYPE, 0o644, len(manifest)), _Bytes(manifest))
    tmp.rename(path)
    result = {**with_meta, "tar_size": path.stat().st_size}
    meta_path.write_text(json.dumps(result))
    return result
