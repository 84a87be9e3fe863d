import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.digest import Digest
from ocipush.errors import UsageError
from ocipush.reference import (
    DOCKER_HUB,
    HUB_ALIASES,
    LayoutReference,
    Reference,
    SourceSpec,
    parse_destination,
    parse_source,
)
from ocipush.registry.credentials import normalize_key

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
    with pytest.raises(UsageError, match=r"reference|image reference"):
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


@pytest.mark.parametrize(
    "text, shown",
    [
        ("localhost:5000/img:v1\n", r"'localhost:5000/img:v1\n'"),
        ("localhost:5000/img\n", r"'localhost:5000/img\n'"),
        ("img@sha256:" + HEX + "\n", r"\n'"),
        ("img:v1\r\n", r"\r\n"),
        (" img:v1", "' img:v1'"),
        ("img:v1 ", "'img:v1 '"),
        ("img\t:v1", r"\t"),
        ("img:v\x001", r"\x00"),
        ("img:v1\x1b[2J", r"\x1b"),
        ("img:v1\u00a0", r"\xa0"),
        ("img:v1\u2028", r"\u2028"),
        ("img:v1\x85", r"\x85"),
        ("docker://img:v1\n", r"'docker://img:v1\n'"),
    ],
)
def test_whitespace_and_control_characters_are_usage_errors(text, shown):
    """$ matched before a trailing newline: a CI variable's newline passed, then broke."""
    with pytest.raises(UsageError, match="is not allowed in it") as caught:
        Reference.parse(text)
    message = str(caught.value)
    assert shown in message and message.isprintable()


@pytest.mark.parametrize(
    "text",
    [
        "img:vé",
        "ímg:v1",
        "img:v١",
        "host:0/img",
        "host:65536/img",
        "host:123456/img",
        "host:²/img",
        "img@sha256:" + HEX.upper(),
    ],
)
def test_non_ascii_and_out_of_range_are_invalid(text):
    with pytest.raises(UsageError, match="invalid reference"):
        Reference.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + HEX + "\n",
        "sha256:" + HEX + " ",
        " sha256:" + HEX,
        "sha256:" + HEX[:-1] + "\u0661",
        "sha256:" + "０" * 64,
    ],
)
def test_digests_match_whole(text):
    with pytest.raises(ValueError):
        Digest.parse(text)


def test_digest_messages_quote_long_values_briefly():
    with pytest.raises(ValueError) as caught:
        Digest.parse("x" * 10_000)
    assert len(str(caught.value)) < 300


@given(st.text(max_size=60))
def test_any_text_is_a_reference_or_a_usage_error(text):
    try:
        Reference.parse(text)
    except UsageError as e:
        assert str(e).isprintable(), str(e)  # one line, whatever the input held
        return
    assert text.isascii() and text.isprintable() and " " not in text


@given(st.sampled_from(["", "oci:", "oci-archive:", "docker://", "docker-daemon:"]), st.text(max_size=40))
def test_any_destination_is_parsed_or_a_usage_error(prefix, text):
    """Local or registry: a value, or one printable UsageError line; never another exception."""
    try:
        parsed = parse_destination(prefix + text)
    except UsageError as e:
        assert str(e).isprintable(), str(e)
        return
    assert isinstance(parsed, (Reference, LayoutReference))
    if isinstance(parsed, LayoutReference):
        assert parsed.path == parsed.path.strip(" ") and parsed.path.isprintable()
        assert parsed.tag is None or (parsed.tag.isprintable() and " " not in parsed.tag)


@pytest.mark.parametrize(
    "text, parsed, shown",
    [
        ("oci:out", LayoutReference("oci", "out"), "oci:out"),
        ("oci:out:", LayoutReference("oci", "out"), "oci:out"),
        ("oci:my dir/out:v1", LayoutReference("oci", "my dir/out", "v1"), "oci:my dir/out:v1"),
        ("oci-archive:/tmp/a.tar:v1", LayoutReference("oci-archive", "/tmp/a.tar", "v1"), "oci-archive:/tmp/a.tar:v1"),
        ("localhost:5000/img", Reference("localhost:5000", "img", "latest"), "localhost:5000/img:latest"),
        ("docker://ubuntu", Reference("docker.io", "library/ubuntu", "latest"), "docker.io/library/ubuntu:latest"),
    ],
)
def test_parse_destination(text, parsed, shown):
    assert parse_destination(text) == parsed
    assert str(parsed) == shown


def test_with_digest_keeps_the_destination_kind():
    digest = Digest.parse("sha256:" + HEX)
    assert str(parse_destination("oci:out:v1").with_digest(digest)) == f"oci:out:v1@sha256:{HEX}"
    assert str(parse_destination("localhost:5000/img:v1").with_digest(digest)) == f"localhost:5000/img@sha256:{HEX}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("oci:", "'oci:': missing the path"),
        ("oci-archive::v1", "missing the path"),
        ("docker-daemon:img", "destination transport 'docker-daemon' is not supported"),
        ("oci:out:v 1", "invalid destination tag 'v 1'"),
    ],
)
def test_parse_destination_refuses(text, message):
    with pytest.raises(UsageError) as caught:
        parse_destination(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text, transport, path, ref",
    [
        ("oci:./layout", "oci", "./layout", None),
        ("oci:./layout:", "oci", "./layout", None),
        ("oci:./layout:v1", "oci", "./layout", "v1"),
        ("oci-archive:a b.tar:@1", "oci-archive", "a b.tar", "@1"),
        ("docker-archive:a.tar:repo:tag", "docker-archive", "a.tar", "repo:tag"),
        ("docker-daemon:hello:v1", "docker-daemon", "hello:v1", None),  # an IMAGE keeps its colons
        ("containers-storage:localhost/img", "containers-storage", "localhost/img", None),
        ("dir:./img:v1", "dir", "./img:v1", None),  # a dir: PATH keeps its colons, as in containers/image
        ("dir:./-", "dir", "./-", None),
        ("docker-archive:-", "docker-archive", "-", None),  # standard input
        ("oci-archive:-:v1", "oci-archive", "-", "v1"),
    ],
)
def test_parse_source(text, transport, path, ref):
    spec = parse_source(text)
    assert spec == SourceSpec(transport, path, ref)
    assert str(spec) == text  # messages name the source as the user wrote it


@pytest.mark.parametrize(
    "text, message",
    [
        ("./img", "unknown source transport in './img': use one of oci:PATH[:REF], "),
        ("tarball:x.tar", "unknown source transport in 'tarball:x.tar'"),
        ("dir:", "'dir:': missing the directory path"),
        ("dir:-", "'dir:-': a directory cannot come on standard input; name a directory called - as dir:./-"),
        ("docker:img", "'docker:img': a registry source is docker://HOST/REPO[:TAG|@DIGEST]"),
        ("docker://", "empty image reference"),
        ("docker://alice:pw@host.io/img", "credentials do not belong in a reference"),
        ("oci:", "'oci:': missing the layout path"),
        ("docker-archive::x", "'docker-archive::x': missing the archive path"),
        ("docker-daemon:", "'docker-daemon:': missing the image name"),
        ("docker-daemon:busy box", "invalid image name 'busy box'"),
        ("oci:x:v 1", "invalid source REF 'v 1'"),
        ("oci:x\n", "invalid source 'oci:x\\n'"),
        (" oci:x", "leading or trailing spaces"),
    ],
)
def test_parse_source_refuses(text, message):
    with pytest.raises(UsageError) as caught:
        parse_source(text)
    assert message in str(caught.value)


@given(st.sampled_from(["", "oci:", "oci-archive:", "docker-archive:", "docker-daemon:", "dir:", "docker://"]),
       st.text(max_size=40))
def test_any_source_is_parsed_or_a_usage_error(prefix, text):
    try:
        spec = parse_source(prefix + text)
    except UsageError as e:
        assert str(e).isprintable(), str(e)
        return
    assert spec.path and spec.path.isprintable()
    assert spec.ref is None or (spec.ref.isprintable() and " " not in spec.ref)


@pytest.mark.parametrize("alias", sorted(HUB_ALIASES))
def test_hub_aliases_mean_docker_hub_in_references_and_auth_files(alias):
    """One list serves both: a name a reference normalises to Docker Hub is also the key
    that finds Docker Hub's login in an auth file."""
    assert Reference.parse(f"{alias}/team/img").registry == DOCKER_HUB
    assert normalize_key(alias) == normalize_key(f"https://{alias}/v1/") == DOCKER_HUB
