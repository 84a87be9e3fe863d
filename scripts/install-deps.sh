#!/bin/sh
# Install the system tools the integration tests drive (Debian/Ubuntu).
# Idempotent: does nothing, and needs no network, when all are present.
set -eu

# TOOL, or TOOL=PACKAGE where the Debian package has another name. openssl makes the
# auth and TLS tests' CAs, certificates and token signatures; htpasswd their bcrypt logins.
TOOLS="docker-registry nginx skopeo podman umoci zstd curl openssl htpasswd=apache2-utils time"

missing=""
for entry in $TOOLS; do
    tool=${entry%%=*}
    # nginx is in /usr/sbin, which is not on a normal user's PATH.
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        missing="$missing ${entry#*=}"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all present ($TOOLS)"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

echo "install-deps: installing$missing"
$sudo apt-get update
# No recommends: skopeo's policy.json and registries.conf come from a hard
# dependency (golang-github-containers-common), and the tests pass their own
# --policy anyway; the recommends are podman networking (netavark, nftables...).
# shellcheck disable=SC2086  # $missing is a word list
$sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends $missing
