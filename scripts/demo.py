"""`make demo`: the main job, end to end, on this machine.

1. start the CNCF registry and, in front of it, nginx refusing request bodies over 8 MB
   and advertising OCI-Chunk-Max-Length, as a serverless registry does;
2. generate a sample image of a few tens of MB;
3. show that skopeo, which sends a layer in one request, is refused (413);
4. push it with ocipush, in chunks, and again recompressed to zstd;
5. pull both back with skopeo, which verifies every digest;
6. stop the services.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.imagegen import LayerSpec, make_layout
from tests.services import skopeo_copy, skopeo_pull, start_proxy, start_registry


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def ocipush(*args: str) -> str:
    command = [sys.executable, "-m", "ocipush", *args]
    print("$ ocipush " + " ".join(args), flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"demo failed: ocipush exited {result.returncode}")
    print(result.stdout, end="", flush=True)
    return result.stdout.strip()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ocipush-demo-") as tmp:
        work = Path(tmp)
        for sub in ("registry", "proxy"):
            (work / sub).mkdir()
        step("starting a registry behind nginx with an 8 MB body limit")
        with start_registry(work / "registry") as registry, start_proxy(work / "proxy", registry) as proxy:
            print(f"registry {registry.host}, body-limited proxy {proxy.host}")

            step("generating a sample image: a 20 MB layer of random bytes and 16 MB of text")
            info = make_layout(
                work / "image", [LayerSpec(20_000_000), LayerSpec(16_000_000, "text", files=4)], ref="demo"
            )
            print(f"oci:{info.layout}:demo  {info.digest}")

            step("skopeo copy sends each layer in one request: the proxy refuses it")
            refused = skopeo_copy(f"oci:{info.layout}:demo", f"docker://{proxy.host}/demo/skopeo:demo")
            print((refused.stderr.strip().splitlines() or ["(no output)"])[-1][:200])
            if refused.returncode == 0 or "413" not in refused.stderr:
                sys.exit("demo failed: expected skopeo to be refused with 413")

            step("ocipush sends it in chunks that fit")
            mark = proxy.mark()
            pushed = ocipush(f"oci:{info.layout}:demo", f"{proxy.host}/demo/app:demo")
            patches = [r for r in proxy.requests(mark) if r.method == "PATCH"]
            print(f"{len(patches)} PATCH requests, the largest {max(r.body_length or 0 for r in patches):,} bytes")

            step("and again, recompressed to zstd on the way")
            zstd = ocipush(f"oci:{info.layout}:demo", f"{proxy.host}/demo/app:zstd", "--compression-format", "zstd")

            step("skopeo pulls both back, verifying every digest")
            for n, ref in enumerate((pushed, zstd)):
                skopeo_pull(ref, work / f"pulled-{n}")
                print(f"verified {ref}")
            if not pushed.endswith(info.digest):
                sys.exit("demo failed: the pushed digest differs from the source's")
        step("done: services stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
