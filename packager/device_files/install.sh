#!/bin/sh
# Offline install of an edgepack bundle on the device: a venv with the
# bundle's own wheels (no network, pip's hash-checking mode), and the
# edge-run launcher. Safe to run again: an intact install is left as it is.
#
#   ./install.sh [--trust KEY.pub]... [--prefix DIR | --venv DIR] [--python PYTHON] [--service [--host H] [--port N]]
#   ./install.sh --rollback --prefix DIR
#
#   --trust KEY.pub  pin this public key: from now on only bundles signed with
#                    it (edgepack build --sign KEY) install and run. It goes to
#                    /etc/edgepack/allowed_signers as root (every user), else
#                    ~/.config/edgepack/allowed_signers ($EDGEPACK_TRUST_DIR
#                    names another folder; /etc's pin, once there, stays in
#                    effect whatever a variable says). The pin is exactly the keys given: it
#                    replaces the keys pinned before. Give --trust twice to
#                    rotate keys (--trust NEW.pub --trust OLD.pub), and NEW alone
#                    once no version signed by OLD is installed
#   --prefix DIR     A/B install: the bundle is copied to DIR/versions/<name>-<digest>
#                    with its venv, health-checked (its stored sample gives the
#                    build's outputs within EDGEPACK_HEALTH_TIMEOUT seconds, 120;
#                    with --service the server answers /v2/health/ready too), and
#                    only then DIR/current points at it (DIR/previous at the one
#                    before); DIR/bin/edge-run runs DIR/current. Without it: in place
#   --rollback       point DIR/current back at DIR/previous (and the other way),
#                    once DIR/previous passes verify-bundle (the pin of now)
#   --venv DIR       in place: where the venv goes (default: .venv inside the bundle)
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
TRUST_KEYS=""  # one per line
ROOT=""
ROLLBACK=0
HEALTH_TIMEOUT="${EDGEPACK_HEALTH_TIMEOUT:-120}"

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}

# One argument as a single-quoted shell word.
shquote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

nl='
'
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; ROOT=$2; shift 2 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; PREFIX=$2; shift 2 ;;
    --rollback) ROLLBACK=1; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --service) SERVICE=1; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs an address"; HOST=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    --trust) [ $# -ge 2 ] || die "--trust needs a public key file (KEY.pub)"; TRUST_KEYS="$TRUST_KEYS$2$nl"; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (expected --trust KEY.pub, --prefix DIR, --rollback, --venv DIR, --python PYTHON, --service, --host H, --port N)" ;;
  esac
done

case "$HERE$PREFIX$ROOT" in *"$nl"*) die "the bundle, --prefix or --venv path holds a newline; move it to a plain path" ;; esac
[ -z "$ROOT" ] || [ "$PREFIX" = "$HERE/.venv" ] || die "--venv is for an install in place; --prefix keeps each version's venv in it"
case "$HEALTH_TIMEOUT" in ''|*[!0-9]*|0) die "EDGEPACK_HEALTH_TIMEOUT must be a whole number of seconds, found '$HEALTH_TIMEOUT'" ;; esac

# DIR/current and DIR/previous name versions/<version>: each is changed by
# renaming a new link over it (rename(2), mv -T), so it is never missing.
point() {
  ln -sfn "versions/$2" "$ROOT/.$1.new" && mv -T "$ROOT/.$1.new" "$ROOT/$1"
}
version_of() {
  v=$(readlink "$ROOT/$1" 2>/dev/null) || v=""
  printf '%s' "${v#versions/}"
}
# A running service (its unit runs DIR/bin/edge-run serve DIR/current) restarts on the version now current.
restart_service() {
  unit="edge-run-$1.service"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ] && [ -e "/etc/systemd/system/$unit" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl try-restart "$unit" || die "systemctl could not restart $unit on $(version_of current) (journalctl -u $unit)"
    echo "install.sh: restarted $unit"
  fi
}

if [ "$ROLLBACK" = 1 ]; then
  [ -n "$ROOT" ] || die "--rollback needs --prefix DIR, the folder install.sh --prefix installed into"
  cur=$(version_of current) prev=$(version_of previous)
  [ -n "$cur" ] && [ -d "$ROOT/versions/$cur" ] || die "$ROOT/current names no installed version: nothing to roll back"
  [ -n "$prev" ] && [ -d "$ROOT/versions/$prev" ] || die "$ROOT/previous names no installed version: nothing to roll back to (current stays $cur)"
  # It must still run here: intact, and signed by a key pinned now (the pin may have changed since).
  sh "$ROOT/versions/$prev/verify-bundle" || die "$prev, the previous version, fails its check (above), so it would not run: not rolled back, current stays $cur"
  point current "$prev" || die "could not point $ROOT/current at $prev; it still names $cur"
  point previous "$cur" || die "could not point $ROOT/previous at $cur (current is $prev)"
  echo "install.sh: rolled back: current is $prev (was $cur, now previous: --rollback again returns to it)"
  name=$(sed -n 's/^name=//p' "$ROOT/versions/$prev/install.conf")
  case "$name" in ''|*[!A-Za-z0-9._+-]*) ;; *) restart_service "$name" ;; esac
  exit 0
fi

# The pin: OpenSSH public key lines, each checked by ssh-keygen, written as allowed-signers
# entries for the edgepack-bundle namespace only (man ssh-keygen). It is exactly the keys given.
pin_entries() {
  for key in $TRUST_KEYS; do
    printf 'edgepack-bundle namespaces="edgepack-bundle" %s\n' "$(grep . "$key" | cut -d' ' -f1,2)"
  done
}
# The fingerprints of the keys in an allowed-signers file install.sh wrote, comma-separated.
fingerprints() {
  sed -n 's/^edgepack-bundle namespaces="edgepack-bundle" //p' "$1" 2>/dev/null \
    | ssh-keygen -l -f - 2>/dev/null | cut -d' ' -f2 | sort -u | paste -s -d, - | sed 's/,/, /g'
}
if [ -n "$TRUST_KEYS" ]; then
  command -v ssh-keygen >/dev/null 2>&1 || die "--trust needs ssh-keygen to check signatures (apt install openssh-client)"
  set -f; IFS=$nl  # one key path per line, taken whole
  for key in $TRUST_KEYS; do
    [ -f "$key" ] || die "--trust $key: no such file; pass the public key (KEY.pub) bundles are signed with"
    [ "$(grep -c . "$key")" = 1 ] && grep -q -E -x '(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?' "$key" \
      || die "--trust $key is not one OpenSSH public key line; pass KEY.pub (never the private key)"
    ssh-keygen -l -f "$key" </dev/null >/dev/null 2>&1 || die "--trust $key: ssh-keygen cannot read it as a public key; pass KEY.pub"
  done
  if [ -n "${EDGEPACK_TRUST_DIR:-}" ]; then
    trust_dir=$EDGEPACK_TRUST_DIR
  elif [ "$(id -u)" = 0 ]; then
    trust_dir=/etc/edgepack
  else
    [ ! -e /etc/edgepack/allowed_signers ] || die "a key is pinned for every user in /etc/edgepack/allowed_signers; change it as root (sudo $0 --trust KEY.pub)"
    trust_dir="${HOME:?}/.config/edgepack"
  fi
  [ "$trust_dir" = /etc/edgepack ] || [ ! -e /etc/edgepack/allowed_signers ] \
    || die "a key is pinned for every user in /etc/edgepack/allowed_signers, and it stays in effect; change it as root without EDGEPACK_TRUST_DIR (sudo $0 --trust KEY.pub)"
  mkdir -p "$trust_dir"
  pin_entries > "$trust_dir/allowed_signers.tmp"
  unset IFS; set +f
  pinned=$(fingerprints "$trust_dir/allowed_signers.tmp")
  before=$(fingerprints "$trust_dir/allowed_signers")
  mv "$trust_dir/allowed_signers.tmp" "$trust_dir/allowed_signers"
  case "$pinned" in
    *,*) echo "install.sh: pinned $pinned in $trust_dir/allowed_signers: from now on only bundles one of them signed install and run" ;;
    *) echo "install.sh: pinned $pinned in $trust_dir/allowed_signers: from now on only bundles it signed install and run" ;;
  esac
  # What the new pin drops: bundles those keys signed, the installed versions too, no longer run.
  dropped=""
  for old in $(printf '%s' "$before" | tr -d ',' ); do
    case ", $pinned," in *", $old,"*) ;; *) dropped="$dropped${dropped:+, }$old" ;; esac
  done
  [ -z "$dropped" ] || echo "install.sh: no longer pinned: $dropped (--trust replaces the pin with exactly the keys given): bundles signed only by it no longer install or run, installed versions included; to rotate keys, pin the new and the old together (--trust NEW.pub --trust OLD.pub) until every version in use is signed by the new one"
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

BUNDLE=$HERE
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT/versions" "$ROOT/bin" || die "cannot create $ROOT/versions"
  ROOT=$(cd "$ROOT" && pwd -P)
  VERSION="$NAME-$(sha256sum "$HERE/manifest.json" | cut -c1-12)"
  BUNDLE="$ROOT/versions/$VERSION"
  CURRENT=$(version_of current)
  # Refused or failed: the running version and the links are as they were.
  refuse() {
    if [ "$VERSION" != "$CURRENT" ] && [ "$VERSION" != "$(version_of previous)" ] && [ "$BUNDLE" != "$HERE" ]; then
      rm -rf "$BUNDLE"
    fi
    die "$VERSION $1; nothing changed: ${CURRENT:-no version} is still current in $ROOT"
  }
  if [ ! -d "$BUNDLE" ]; then
    rm -rf "$BUNDLE.partial"
    mkdir "$BUNDLE.partial" && (cd "$HERE" && tar --exclude=./.venv -cf - .) | (cd "$BUNDLE.partial" && tar -xf -) \
      && mv "$BUNDLE.partial" "$BUNDLE" || { rm -rf "$BUNDLE.partial"; refuse "could not be copied to $BUNDLE"; }
  fi
  sh "$BUNDLE/verify-bundle" --all || refuse "failed its check once copied (above)"
  PREFIX="$BUNDLE/.venv"
  REQS="$BUNDLE/wheels/requirements.txt"
fi

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
    --require-hashes --only-binary=:all: --find-links "$BUNDLE/wheels" -r "$REQS" \
    || die "pip could not install $PACKAGES from $BUNDLE/wheels (hash-checked against wheels/requirements.txt)"
  echo "$want_stamp" > "$STAMP"
  echo "install.sh: installed $PACKAGES into $PREFIX"
fi

# The installed launcher: paths as quoted shell words, never pasted raw.
mkdir -p "$PREFIX/bin"
{
  echo '#!/bin/sh'
  echo "EDGE_RUN_PYTHON=$(shquote "$PREFIX/bin/python") exec $(shquote "$BUNDLE/edge-run") \"\$@\""
} > "$PREFIX/bin/edge-run.tmp"
chmod +x "$PREFIX/bin/edge-run.tmp"
mv "$PREFIX/bin/edge-run.tmp" "$PREFIX/bin/edge-run"
[ -n "$ROOT" ] || echo "install.sh: run it with $HERE/edge-run (or $PREFIX/bin/edge-run)"

if [ "$SERVICE" = 1 ]; then
  case "$PORT" in ''|*[!0-9]*) die "--port must be a number, found '$PORT'" ;; esac
  [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port must be 1..65535, found $PORT"
  case "$HOST" in ''|*[!A-Za-z0-9.:-]*) die "--host must be an address or host name, found '$HOST'" ;; esac
  # A unit file has its own quoting (and %-specifiers): only plain paths go in.
  case "$HERE$PREFIX" in
    *[!A-Za-z0-9._/+-]*) die "--service needs the bundle and venv at plain paths (letters, digits, . _ / + -); found $HERE and $PREFIX; move the bundle" ;;
  esac
fi

if [ -n "$ROOT" ]; then
  echo "install.sh: health check of $VERSION: its stored sample, at most ${HEALTH_TIMEOUT}s"
  status=0
  timeout -k 5 "$HEALTH_TIMEOUT" "$PREFIX/bin/edge-run" health "$BUNDLE" || status=$?
  case "$status" in
    0) ;;
    124|137) refuse "failed its health check: it did not finish within ${HEALTH_TIMEOUT}s (EDGEPACK_HEALTH_TIMEOUT)" ;;
    *) refuse "failed its health check (above)" ;;
  esac
  if [ "$SERVICE" = 1 ]; then
    # edge-run serve on a spare loopback port until /v2/health/ready answers 200.
    probe="${EDGEPACK_HEALTH_PORT:-18080}"
    case "$probe" in ''|*[!0-9]*) die "EDGEPACK_HEALTH_PORT must be a port number, found '$probe'" ;; esac
    timeout -k 5 "$HEALTH_TIMEOUT" "$PREFIX/bin/edge-run" serve "$BUNDLE" --host 127.0.0.1 --port "$probe" >/dev/null 2>&1 &
    server=$!
    status=0
    "$PREFIX/bin/python" -I -c '
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            sys.exit(0 if reply.status == 200 else 1)
    except OSError:
        time.sleep(0.5)
sys.exit(1)' "http://127.0.0.1:$probe/v2/health/ready" "$HEALTH_TIMEOUT" || status=$?
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    [ "$status" = 0 ] || refuse "failed its health check: edge-run serve was not ready (GET /v2/health/ready on port $probe) within ${HEALTH_TIMEOUT}s"
    echo "install.sh: edge-run serve $VERSION answered /v2/health/ready"
  fi
  {
    echo '#!/bin/sh'
    echo "EDGE_RUN_PYTHON=$(shquote "$ROOT/current/.venv/bin/python") exec $(shquote "$ROOT/current/edge-run") \"\$@\""
  } > "$ROOT/bin/edge-run.tmp"
  chmod +x "$ROOT/bin/edge-run.tmp"
  mv "$ROOT/bin/edge-run.tmp" "$ROOT/bin/edge-run"
  if [ "$CURRENT" = "$VERSION" ]; then
    echo "install.sh: $VERSION is already current in $ROOT"
  else
    if [ -n "$CURRENT" ]; then
      point previous "$CURRENT" || refuse "could not point $ROOT/previous at $CURRENT"
    fi
    point current "$VERSION" || die "could not point $ROOT/current at $VERSION; it still names ${CURRENT:-nothing}"
    echo "install.sh: current is $VERSION${CURRENT:+ (previous: $CURRENT; install.sh --rollback --prefix $ROOT returns to it)}"
  fi
  echo "install.sh: run it with $ROOT/bin/edge-run run $ROOT/current ..."
  # The unit runs whatever is current.
  BUNDLE="$ROOT/current" PREFIX="$ROOT"
fi

if [ "$SERVICE" = 1 ]; then
  unit="edge-run-$NAME.service"
  dir="${EDGE_RUN_UNIT_DIR:-/etc/systemd/system}"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    command -v systemctl >/dev/null 2>&1 || die "systemctl not found: --service needs systemd (or set EDGE_RUN_UNIT_DIR to only write the unit)"
    [ "$(id -u)" = 0 ] || die "--service writes $dir/$unit: run it with sudo"
  fi
  mkdir -p "$dir"
  sed -e "s|@NAME@|$NAME|g" -e "s|@BUNDLE@|$BUNDLE|g" -e "s|@LAUNCHER@|$PREFIX/bin/edge-run|g" \
    -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" "$HERE/edge-run.service" > "$dir/$unit.tmp"
  mv "$dir/$unit.tmp" "$dir/$unit"
  echo "install.sh: wrote $dir/$unit"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    systemctl daemon-reload && systemctl enable "$unit" && systemctl restart "$unit" || die "systemctl could not start $unit (journalctl -u $unit)"
    echo "install.sh: $unit enabled and started (http://$HOST:$PORT/v2/health/ready)"
  fi
fi
