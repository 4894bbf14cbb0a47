#!/bin/sh
# Offline install of the edgepack bundle "@NAME@" on the device:
# a venv with the bundle's own wheels (no network), and the edge-run launcher.
# Safe to run again: an intact install is left as it is.
#
#   ./install.sh [--prefix DIR] [--python PYTHON] [--service [--host H] [--port N]]
#
#   --prefix DIR     where the venv goes (default: .venv inside the bundle)
#   --python PYTHON  the interpreter to build the venv from (default: python3)
#   --service        also install and start the systemd unit running
#                    `edge-run serve` (needs root; EDGE_RUN_UNIT_DIR only writes it there)
set -eu

WANT_ARCH="@ARCH@"
WANT_PYTHON="@PYTHON@"
PACKAGES="@PACKAGES@"

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX="$HERE/.venv"
PYTHON="python3"
SERVICE=0
HOST="0.0.0.0"
PORT="8080"

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --service) SERVICE=1; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs an address"; HOST=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (expected --prefix DIR, --python PYTHON, --service, --host H, --port N)" ;;
  esac
done

arch=$(uname -m)
[ "$arch" = "$WANT_ARCH" ] || die "this bundle's wheels are for $WANT_ARCH, this machine is $arch; rebuild with a --target profile for this device"

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; this bundle needs Python $WANT_PYTHON (apt install python3 python3-venv)"
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PYTHON does not run"
[ "$have" = "$WANT_PYTHON" ] || die "this bundle's wheels are for Python $WANT_PYTHON, $PYTHON is Python $have; rebuild with a profile whose python is \"$have\", or pass --python python$WANT_PYTHON"

SUMS="$HERE/wheels/SHA256SUMS"
[ -f "$SUMS" ] || die "this bundle has no wheels/ (built with --no-wheels); install $PACKAGES yourself, or rebuild without --no-wheels"
while read -r sum file; do
  [ -f "$HERE/wheels/$file" ] || die "wheel $file is missing from $HERE/wheels; copy the whole bundle again"
done < "$SUMS"
(cd "$HERE/wheels" && sha256sum -c --quiet --status SHA256SUMS) || die "a wheel in $HERE/wheels does not match SHA256SUMS (corrupt copy); copy the bundle again"

STAMP="$PREFIX/.edgepack-install"
want_stamp="$(sha256sum "$SUMS" | cut -d' ' -f1) $PACKAGES"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && "$PREFIX/bin/python" -c "import numpy" >/dev/null 2>&1; then
  echo "install.sh: already installed in $PREFIX"
else
  if [ ! -x "$PREFIX/bin/python" ]; then
    "$PYTHON" -m venv "$PREFIX" || die "could not create a venv with $PYTHON (apt install python3-venv)"
  fi
  PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$PREFIX/bin/python" -m pip install --quiet --no-index \
    --no-cache-dir --find-links "$HERE/wheels" $PACKAGES || die "pip could not install $PACKAGES from $HERE/wheels"
  echo "$want_stamp" > "$STAMP"
  echo "install.sh: installed $PACKAGES into $PREFIX"
fi

mkdir -p "$PREFIX/bin"
cat > "$PREFIX/bin/edge-run" <<LAUNCHER
#!/bin/sh
EDGE_RUN_PYTHON="$PREFIX/bin/python" exec "$HERE/edge-run" "\$@"
LAUNCHER
chmod +x "$PREFIX/bin/edge-run"
echo "install.sh: run it with $HERE/edge-run (or $PREFIX/bin/edge-run)"

if [ "$SERVICE" = 1 ]; then
  case "$PORT" in ''|*[!0-9]*) die "--port must be a number, found '$PORT'" ;; esac
  unit="edge-run-@NAME@.service"
  dir="${EDGE_RUN_UNIT_DIR:-/etc/systemd/system}"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    command -v systemctl >/dev/null 2>&1 || die "systemctl not found: --service needs systemd (or set EDGE_RUN_UNIT_DIR to only write the unit)"
    [ "$(id -u)" = 0 ] || die "--service writes $dir/$unit: run it with sudo"
  fi
  mkdir -p "$dir"
  sed -e "s|@BUNDLE@|$HERE|g" -e "s|@LAUNCHER@|$PREFIX/bin/edge-run|g" -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" \
    "$HERE/edge-run.service" > "$dir/$unit.tmp"
  mv "$dir/$unit.tmp" "$dir/$unit"
  echo "install.sh: wrote $dir/$unit"
  if [ -z "${EDGE_RUN_UNIT_DIR:-}" ]; then
    systemctl daemon-reload && systemctl enable --now "$unit" || die "systemctl could not start $unit (journalctl -u $unit)"
    echo "install.sh: $unit enabled and started (http://$HOST:$PORT/v2/health/ready)"
  fi
fi
