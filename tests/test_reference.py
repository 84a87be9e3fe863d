import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.digest import Digest
from ocipush.errors import UsageError
from ocipush.reference import Reference

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
        ("docker://ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
        ("index.docker.io/foo/bar", "docker.io", "foo/bar", "latest", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("localhost:5000/team/sub/img:v1.2", "localhost:5000", "team/sub/img", "v1.2", None),
        ("registry.example.com/a/b", "registry.example.com", "a/b", "latest", None),
        ("127.0.0.1:5000/img@sha256:" + HEX, "127.0.0.1:5000", "img", None, "sha256:" + HEX),
        ("[::1]:5000/img:t", "[::1]:5000", "img", "t", None),
        ("Host/img", "Host", "img", "latest", None),  # upper case makes it a host, as in docker
        ("a.b/c__d/e-f.g_h:T_1", "a.b", "c__d/e-f.g_h", "T_1", None),
    ],
)
def test_parse(text, registry, repository, tag, digest):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "docker://",
        "UPPER/case/Repo",
        "host:5000/Img",
        "img:bad tag",
        "img:" + "t" * 129,
        "img@sha256:abc",
        "img@md5:" + HEX,
        "img:tag@sha256:" + HEX,
        "host:5000/",
        "a//b",
        "-host.com/x",
        "x/" + "a" * 300,
    ],
)
def test_invalid(text):
    with pytest.raises(UsageError, match="reference|image reference"):
        Reference.parse(text)


def test_loopback_and_api_host():
    assert Reference.parse("localhost:5000/x").is_loopback
    assert Reference.parse("127.0.0.2:5000/x").is_loopback
    assert Reference.parse("[::1]:5000/x").is_loopback
    assert not Reference.parse("registry.example.com/x").is_loopback
    assert Reference.parse("ubuntu").api_host == "registry-1.docker.io"
    assert Reference.parse("quay.io/x").api_host == "quay.io"


component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,4}){0,2}", fullmatch=True)
hosts = st.one_of(
    st.sampled_from(["localhost", "registry.example.com", "127.0.0.1", "[::1]", "r.io"]),
).flatmap(lambda h: st.sampled_from([h, h + ":5000", h + ":443"]))
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(hosts, st.lists(component, min_size=1, max_size=4), st.one_of(st.none(), tags), st.booleans())
def test_round_trip(host, parts, tag, scheme):
    text = f"{host}/{'/'.join(parts)}" + (f":{tag}" if tag else "")
    ref = Reference.parse(("docker://" if scheme else "") + text)
    assert ref.registry == host
    assert ref.repository == "/".join(parts)
    assert ref.tag == (tag or "latest")
    assert Reference.parse(str(ref)) == ref
    d = Digest.parse("sha256:" + HEX)
    assert Reference.parse(str(ref.with_digest(d))) == ref.with_digest(d)
