#!/bin/sh
# Offline install of an edgepack bundle on the device: a venv with the
# bundle's own wheels (no network, pip's hash-checking mode), and the
# edge-run launcher. Safe to run again: an intact install is left as it is.
#
#   ./install.sh [--trust KEY.pub] [--prefix DIR] [--python PYTHON] [--service [--host H] [--port N]]
#
#   --trust KEY.pub  pin this public key: from now on only bundles signed with
#                    it (edgepack build --sign KEY) install and run. It goes to
#                    /etc/edgepack/allowed_signers as root (every user), else
#                    ~/.config/edgepack/allowed_signers ($EDGEPACK_TRUST_DIR
#                    overrides both), replacing the key pinned before
#   --prefix DIR     where the venv goes (default: .venv inside the bundle)
#   --python PYTHON  the interpreter to build the venv from (default: python3)
#   --service        also install and start the systemd unit running
#                    `edge-run serve` (needs root; EDGE_RUN_UNIT_DIR only writes it there)
#   --host H         the address the service listens on (default 127.0.0.1:
#                    this device only; 0.0.0.0 opens it to the network)
#
# This script is the same in every bundle: what differs (name, arch, Python,
# packages) is data in install.conf, read and checked, never executed.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd -P)
PREFIX="$HERE/.venv"
PYTHON="python3"
SERVICE=0
HOST="127.0.0.1"
PORT="8080"
TRUST_KEY=""

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}

# One argument as a single-quoted shell word.
shquote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --service) SERVICE=1; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs an address"; HOST=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    --trust) [ $# -ge 2 ] || die "--trust needs a public key file (KEY.pub)"; TRUST_KEY=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (expected --trust KEY.pub, --prefix DIR, --python PYTHON, --service, --host H, --port N)" ;;
  esac
done

nl='
'
case "$HERE$PREFIX" in *"$nl"*) die "the bundle or --prefix path holds a newline; move it to a plain path" ;; esac

# The pin: one OpenSSH public key line, checked by ssh-keygen, written as an
# allowed-signers entry for the edgepack-bundle namespace only (man ssh-keygen).
if [ -n "$TRUST_KEY" ]; then
  command -v ssh-keygen >/dev/null 2>&1 || die "--trust needs ssh-keygen to check signatures (apt install openssh-client)"
  [ -f "$TRUST_KEY" ] || die "--trust $TRUST_KEY: no such file; pass the public key (KEY.pub) bundles are signed with"
  [ "$(grep -c . "$TRUST_KEY")" = 1 ] && grep -q -E -x '(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?' "$TRUST_KEY" \
    || die "--trust $TRUST_KEY is not one OpenSSH public key line; pass KEY.pub (never the private key)"
  fingerprint=$(ssh-keygen -l -f "$TRUST_KEY" </dev/null 2>/dev/null | cut -d' ' -f2) || fingerprint=""
  [ -n "$fingerprint" ] || die "--trust $TRUST_KEY: ssh-keygen cannot read it as a public key; pass KEY.pub"
  if [ -n "${EDGEPACK_TRUST_DIR:-}" ]; then
    trust_dir=$EDGEPACK_TRUST_DIR
  elif [ "$(id -u)" = 0 ]; then
    trust_dir=/etc/edgepack
  else
    [ ! -e /etc/edgepack/allowed_signers ] || die "a key is pinned for every user in /etc/edgepack/allowed_signers; change it as root (sudo $0 --trust $TRUST_KEY)"
    trust_dir="${HOME:?}/.config/edgepack"
  fi
  mkdir -p "$trust_dir"
  printf 'edgepack-bundle namespaces="edgepack-bundle" %s\n' "$(grep . "$TRUST_KEY" | cut -d' ' -f1,2)" > "$trust_dir/allowed_signers.tmp"
  mv "$trust_dir/allowed_signers.tmp" "$trust_dir/allowed_signers"
  echo "install.sh: pinned $fingerprint in $trust_dir/allowed_signers: from now on only bundles it signed install and run"
fi

# Every file checked (system tools only) before any Python from the bundle runs.
sh "$HERE/verify-bundle" --all || die "the bundle failed its check (above); nothing was installed"
trust=$(sh "$HERE/verify-bundle" --trust-file)
if [ -n "$trust" ]; then
  echo "install.sh: signature checked against the key pinned in $trust"
else
  echo "install.sh: no signing key pinned: signatures are not checked (pin one with --trust KEY.pub)"
fi

NAME="" WANT_ARCH="" WANT_PYTHON="" PACKAGES=""
while IFS='=' read -r key value; do
  case "$value" in *[!A-Za-z0-9._+\<\>=!,~\ -]*) die "install.conf: $key holds characters it may not ($value)" ;; esac
  case "$key" in
    name) NAME=$value ;;
    arch) WANT_ARCH=$value ;;
    python) WANT_PYTHON=$value ;;
    packages) PACKAGES=$value ;;
    *) die "install.conf: unknown key '$key'" ;;
  esac
done < "$HERE/install.conf"
[ -n "$NAME" ] && [ -n "$WANT_ARCH" ] && [ -n "$WANT_PYTHON" ] || die "install.conf lacks name, arch or python; rebuild the bundle"

arch=$(uname -m)
[ "$arch" = "$WANT_ARCH" ] || die "this bundle's wheels are for $WANT_ARCH, this machine is $arch; rebuild with a --target profile for this device"

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; this bundle needs Python $WANT_PYTHON (apt install python3 python3-venv)"
have=$("$PYTHON" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PYTHON does not run"
[ "$have" = "$WANT_PYTHON" ] || die "this bundle's wheels are for Python $WANT_PYTHON, $PYTHON is Python $have; rebuild with a profile whose python is \"$have\", or pass --python python$WANT_PYTHON"

REQS="$HERE/wheels/requirements.txt"
[ -f "$REQS" ] || die "this bundle has no wheels/ (built with --no-wheels); install $PACKAGES yourself, or rebuild without --no-wheels"

STAMP="$PREFIX/.edgepack-install"
want_stamp="$(sha256sum "$REQS" | cut -d' ' -f1) $PACKAGES"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && "$PREFIX/bin/python" -I -c "import numpy" >/dev/null 2>&1; then
  echo "install.sh: already installed in $PREFIX"
else
  if [ ! -x "$PREFIX/bin/python" ]; then
    "$PYTHON" -I -m venv "$PREFIX" || die "could not create a venv with $PYTHON (apt install python3-venv)"
  fi
  # Exactly the wheels the manifest pins, by sha256 (pip refuses any other).
  "$PREFIX/bin/python" -I -m pip --isolated install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --require-hashes --only-binary=:all: --find-links "$HERE/wheels" -r "$REQS" \
    || die "pip could not install $PACKAGES from $HERE/wheels (hash-checked against wheels/requirements.txt)"
  echo "$want_stamp" > "$STAMP"
  echo "install.sh: installed $PACKAGES into $PREFIX"
fi

# The installed launcher: paths as quoted shell words, never pasted raw.
mkdir -p "$PREFIX/bin"
{
  echo '#!/bin/sh'
  echo "EDGE_RUN_PYTHON=$(shquote "$PREFIX/bin/python") exec $(shquote "$HERE/edge-run") \"\$@\""
} > "$PREFIX/bin/edge-run.tmp"
chmod +x "$PREFIX/bin/edge-run.tmp"
mv "$PREFIX/bin/edge-run.tmp" "$PREFIX/bin/edge-run"
echo "install.sh: run it with $HERE/edge-run (or $PREFIX/bin/edge-run)"

if [ "$SERVICE" = 1 ]; then
  case "$PORT" in ''|*[!0-9]*) die "--port must be a number, found '$PORT'" ;; esac
  [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port must be 1..65535, found $PORT"
  case "$HOST" in ''|*[!A-Za-z0-9.:-]*) die "--host must be an address or host name, found '$HOST'" ;; esac
  # A unit file has its own quoting (and %-specifiers): only plain paths go in.
  case "$HERE$PREFIX" in
    *[!A-Za-z0-9._/+-]*) die "--service needs the bundle and venv at plain paths (letters, digits, . _ / + -); found $HERE and $PREFIX; move the bundle" ;;
  esac
  unit="edge-run-$NAME.service"
  dir="${EDGE_RUN_UNIT_DIR:-/etc/systemd/system}"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    command -v systemctl >/dev/null 2>&1 || die "systemctl not found: --service needs systemd (or set EDGE_RUN_UNIT_DIR to only write the unit)"
    [ "$(id -u)" = 0 ] || die "--service writes $dir/$unit: run it with sudo"
  fi
  mkdir -p "$dir"
  sed -e "s|@NAME@|$NAME|g" -e "s|@BUNDLE@|$HERE|g" -e "s|@LAUNCHER@|$PREFIX/bin/edge-run|g" \
    -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" "$HERE/edge-run.service" > "$dir/$unit.tmp"
  mv "$dir/$unit.tmp" "$dir/$unit"
  echo "install.sh: wrote $dir/$unit"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    systemctl daemon-reload && systemctl enable --now "$unit" || die "systemctl could not start $unit (journalctl -u $unit)"
    echo "install.sh: $unit enabled and started (http://$HOST:$PORT/v2/health/ready)"
  fi
fi
