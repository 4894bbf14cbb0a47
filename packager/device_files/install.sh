#!/bin/sh
# Offline install of an edgepack bundle on the device: a venv with the
# bundle's own wheels (no network, pip's hash-checking mode), and the
# edge-run launcher. Safe to run again: an intact install is left as it is.
#
#   ./install.sh [--trust KEY.pub]... [--prefix DIR [--allow-downgrade] | --venv DIR] [--python PYTHON] [--service [--host H] [--port N]]
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
#                    with --service its own server, on a port the kernel picks, answers
#                    /v2/health/ready and names this model and version), and
#                    only then DIR/current points at it (DIR/previous at the one
#                    before); DIR/bin/edge-run runs DIR/current. Without it: in place.
#                    Versions only move forward: DIR/newest records the newest
#                    creation time installed, and an older bundle is refused
#   --allow-downgrade  install an older bundle than DIR/newest anyway
#   --rollback       point DIR/current back at DIR/previous (and the other way),
#                    once DIR/previous passes verify-bundle (the pin of now)
#   --venv DIR       in place: where the venv goes (default: .venv inside the bundle)
#   --python PYTHON  the interpreter to build the venv from (default: python3)
#   --service        also install and start the systemd unit running
#                    `edge-run serve` (needs root; EDGE_RUN_UNIT_DIR only writes it there)
#   --host H         the address the service listens on (default 127.0.0.1:
#                    this device only; 0.0.0.0 opens it to the network)
#
# Nothing found on the device is trusted: an environment is made in a temp
# folder beside its place, stamped complete last and renamed into place; one
# found there (or the current version's, reused by hard links when the wheels
# are the same) is used only once verify-env proves it is what the bundle's
# hash-pinned wheels install. A failure removes whatever this run made.
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
ALLOW_DOWNGRADE=0
HEALTH_TIMEOUT="${EDGEPACK_HEALTH_TIMEOUT:-120}"
CURRENT=""
nl='
'
umask 022

# One cleanup path: whatever this run made (MADE, one path a line) goes on any failure, a signal or a step
# that failed under set -e included; DIR/current and DIR/previous change only as the last steps.
MADE="" TMPD="" FINISHED=0 DIED=0
made() { MADE="$MADE$1$nl"; }
cleanup() {
  rc=$?
  set +e
  [ -z "$TMPD" ] || rm -rf "$TMPD"
  [ "$FINISHED" = 0 ] && [ "$rc" != 0 ] || return 0
  set -f; IFS=$nl
  for path in $MADE; do rm -rf "$path"; done
  unset IFS; set +f
  [ "$DIED" = 1 ] || echo "install.sh: error: a step failed (above); removed what this run made${ROOT:+ (${CURRENT:-no version} is still current in $ROOT)}" >&2
}
trap cleanup EXIT
trap 'die "interrupted by a signal; removed what this run made"' INT TERM HUP
die() {
  DIED=1
  echo "install.sh: error: $*" >&2
  exit 1
}

# One argument as a single-quoted shell word.
shquote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; ROOT=$2; shift 2 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; PREFIX=$2; shift 2 ;;
    --rollback) ROLLBACK=1; shift ;;
    --allow-downgrade) ALLOW_DOWNGRADE=1; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
    --service) SERVICE=1; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs an address"; HOST=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; PORT=$2; shift 2 ;;
    --trust) [ $# -ge 2 ] || die "--trust needs a public key file (KEY.pub)"; TRUST_KEYS="$TRUST_KEYS$2$nl"; shift 2 ;;
    -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (expected --trust KEY.pub, --prefix DIR, --rollback, --allow-downgrade, --venv DIR, --python PYTHON, --service, --host H, --port N)" ;;
  esac
done

case "$HERE$PREFIX$ROOT" in *"$nl"*) die "the bundle, --prefix or --venv path holds a newline; move it to a plain path" ;; esac
[ -z "$ROOT" ] || [ "$PREFIX" = "$HERE/.venv" ] || die "--venv is for an install in place; --prefix keeps each version's venv in it"
case "$HEALTH_TIMEOUT" in ''|*[!0-9]*|0) die "EDGEPACK_HEALTH_TIMEOUT must be a whole number of seconds, found '$HEALTH_TIMEOUT'" ;; esac

# DIR/current and DIR/previous name versions/<version>: each is changed by
# renaming a new link over it (rename(2), mv -T), so it is never missing.
point() {
  rm -rf "$ROOT/.$1.new" && ln -sfn "versions/$2" "$ROOT/.$1.new" && mv -T "$ROOT/.$1.new" "$ROOT/$1"
}
# The version DIR/$1 names: empty unless it is a link to versions/<plain name>.
version_of() {
  v=$(readlink "$ROOT/$1" 2>/dev/null) || v=""
  case "$v" in versions/*/*|versions/.|versions/..) v="" ;; versions/[A-Za-z0-9]*) ;; *) v="" ;; esac
  case "${v#versions/}" in *[!A-Za-z0-9._+-]*) v="" ;; esac
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

# Environments: made in DIR.partial beside their place, stamped last, renamed into place; a found one is used
# only once verify-env (the system Python's, never the environment's) proves it is what the wheels install.
env_checks() {
  "$PYTHON" -I "$HERE/verify-env" "$1" "$2/wheels" 2>"$TMPD/verify-env.err"
}
# Two files with the same bytes (sha256sum: a board may have no cmp).
same_file() {
  [ -f "$1" ] && [ -f "$2" ] && [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]
}
stamp() {
  rm -f "$1/.edgepack-install" && printf '%s\n' "$STAMP_TEXT" > "$1/.edgepack-install"
}
# A model-only update: an environment of the same wheels (the current version's, or one beside the bundle),
# copied to $1 by hard links and checked there.
reuse_env() {
  for from in ${CURRENT:+"$ROOT/versions/$CURRENT/.venv"} "$HERE/.venv"; do
    [ "$from" != "$1" ] && [ "$from" != "$BUNDLE/.venv" ] && [ -f "$from/.edgepack-install" ] || continue
    same_file "$(dirname "$from")/wheels/requirements.txt" "$2/wheels/requirements.txt" || continue
    if { cp -al "$from" "$1" 2>/dev/null || { rm -rf "$1" && cp -a "$from" "$1"; }; } \
        && rm -f "$1/.edgepack-install" && env_checks "$1" "$2"; then
      echo "install.sh: the same wheels as $from: its environment reused (hard links), checked by verify-env"
      return 0
    fi
    echo "install.sh: the environment in $from does not check out ($(head -c 300 "$TMPD/verify-env.err")): not reused"
    rm -rf "$1"
  done
  return 1
}
make_env() {
  env=$1
  if [ -e "$env" ] || [ -L "$env" ]; then
    if [ -d "$env" ] && [ ! -L "$env" ] && env_checks "$env" "$2"; then
      # (a stamp already right is left as it is: its time is the install's, which edgepack oci dates layers by)
      [ "$(cat "$env/.edgepack-install" 2>/dev/null)" = "$STAMP_TEXT" ] || stamp "$env" \
        || die "could not write $env/.edgepack-install (is the disk full?)"
      echo "install.sh: already installed in $env (checked against the bundle's wheels by verify-env)"
      return 0
    fi
    [ -L "$env" ] || [ -f "$env/pyvenv.cfg" ] || die "$env exists and is not a Python environment; remove it or choose another --venv"
    echo "install.sh: the environment in $env is not what this bundle's wheels install ($(head -c 300 "$TMPD/verify-env.err")): removed, making a fresh one"
    rm -rf "$env" || die "could not remove $env"
  fi
  made "$env.partial"
  rm -rf "$env.partial"
  if ! reuse_env "$env.partial" "$2"; then
    "$PYTHON" -I -m venv "$env.partial" || die "could not create a venv with $PYTHON in $env.partial (apt install python3-venv; is the disk full?)"
    # Exactly the wheels the manifest pins, by sha256 (pip refuses any other).
    "$env.partial/bin/python" -I -m pip --isolated install --quiet --no-index --no-cache-dir --disable-pip-version-check \
      --require-hashes --only-binary=:all: --find-links "$2/wheels" -r "$REQS" \
      || die "pip could not install $PACKAGES from $2/wheels (hash-checked against wheels/requirements.txt)"
    echo "install.sh: installed $PACKAGES into $env"
  fi
  stamp "$env.partial" || die "could not write $env.partial/.edgepack-install (is the disk full?)"
  mv "$env.partial" "$env" || die "could not move $env.partial to $env"
  [ -n "$ROOT" ] || made "$env"
}
write_launcher() {
  {
    echo '#!/bin/sh'
    echo "EDGE_RUN_PYTHON=$(shquote "$2") exec $(shquote "$3") \"\$@\""
  } > "$1.tmp" && chmod +x "$1.tmp" && mv "$1.tmp" "$1" || die "could not write $1 (is the disk full?)"
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
    trust_dir="${HOME:?}/.config/edgepack"
  fi
  [ "$trust_dir" = /etc/edgepack ] || [ ! -e /etc/edgepack/allowed_signers ] \
    || die "a key is pinned for every user in /etc/edgepack/allowed_signers, and it stays in effect; change it as root (sudo $0 --trust KEY.pub, without EDGEPACK_TRUST_DIR)"
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

# An environment an interrupted run left half made (never used: it has no stamp and no place).
[ -n "$ROOT" ] || rm -rf "$PREFIX.partial"
# Every file checked (system tools only) before any Python from the bundle runs.
sh "$HERE/verify-bundle" --all || die "the bundle failed its check (above); nothing was installed"
trust=$(sh "$HERE/verify-bundle" --trust-file)
. "$HERE/install-versions.sh"
if [ -n "$trust" ]; then
  echo "install.sh: signature checked against the key pinned in $trust"
else
  echo "install.sh: no signing key pinned: signatures are not checked (pin one with --trust KEY.pub)"
fi

NAME="" WANT_ARCH="" WANT_PYTHON="" PACKAGES=""
# What a line of install.conf held, as one printable line (every other character shown as ?).
shown() { printf '%s' "$1" | head -c 80 | tr -c 'A-Za-z0-9._+<>=!,~ -' '?'; }
while IFS='=' read -r key value; do
  case "$value" in *[!A-Za-z0-9._+\<\>=!,~\ -]*) die "install.conf: $(shown "$key") holds characters it may not ($(shown "$value"))" ;; esac
  case "$key" in
    name) NAME=$value ;;
    arch) WANT_ARCH=$value ;;
    python) WANT_PYTHON=$value ;;
    packages) PACKAGES=$value ;;
    *) die "install.conf: unknown key '$(shown "$key")'" ;;
  esac
done < "$HERE/install.conf"
[ -n "$NAME" ] && [ -n "$WANT_ARCH" ] && [ -n "$WANT_PYTHON" ] || die "install.conf lacks name, arch or python; rebuild the bundle"
case "$NAME" in [A-Za-z0-9]*[!A-Za-z0-9._+-]*|[!A-Za-z0-9]*) die "install.conf: name '$NAME' is not a plain name (letters, digits, . _ + -, a letter or digit first); rebuild the bundle" ;; esac

arch=$(uname -m)
[ "$arch" = "$WANT_ARCH" ] || die "this bundle's wheels are for $WANT_ARCH, this machine is $arch; rebuild with a --target profile for this device"

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; this bundle needs Python $WANT_PYTHON (apt install python3 python3-venv)"
have=$("$PYTHON" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PYTHON does not run"
[ "$have" = "$WANT_PYTHON" ] || die "this bundle's wheels are for Python $WANT_PYTHON, $PYTHON is Python $have; rebuild with a profile whose python is \"$have\", or pass --python python$WANT_PYTHON"

REQS="$HERE/wheels/requirements.txt"
[ -f "$REQS" ] || die "this bundle has no wheels/ (built with --no-wheels); install $PACKAGES yourself, or rebuild without --no-wheels"
if [ "$SERVICE" = 1 ]; then
  case "$PORT" in ''|*[!0-9]*) die "--port must be a number, found '$PORT'" ;; esac
  [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "--port must be 1..65535, found $PORT"
  case "$HOST" in ''|*[!A-Za-z0-9.:-]*) die "--host must be an address or host name, found '$HOST'" ;; esac
  # A unit file has its own quoting (and %-specifiers): only plain paths go in.
  case "$HERE$PREFIX$ROOT" in
    *[!A-Za-z0-9._/+-]*) die "--service needs the bundle, venv and --prefix at plain paths (letters, digits, . _ / + -); found $HERE, $PREFIX, $ROOT; move them" ;;
  esac
fi
TMPD=$(mktemp -d) || die "cannot make a temp folder (mktemp -d); is the disk full?"

BUNDLE=$HERE
if [ -n "$ROOT" ]; then
  prepare_prefix
  check_forward
  rm -rf "$BUNDLE/.venv.partial"
  # A folder left by an earlier run is checked by this bundle's own verify-bundle (the same bytes, or none
  # runs): kept when it passes (its environment is checked below), else made again unless it is in use.
  in_use=0
  [ "$VERSION" != "$CURRENT" ] && [ "$VERSION" != "$(version_of previous)" ] && [ "$BUNDLE" != "$HERE" ] || in_use=1
  if [ -d "$BUNDLE" ] && [ "$in_use" = 0 ]; then
    made "$BUNDLE"
    same_file "$HERE/verify-bundle" "$BUNDLE/verify-bundle" && sh "$BUNDLE/verify-bundle" --all 2>/dev/null \
      || rm -rf "$BUNDLE" || refuse "left by an earlier run, could not be removed from $ROOT/versions"
  fi
  if [ ! -d "$BUNDLE" ]; then
    made "$BUNDLE.partial"
    rm -rf "$BUNDLE.partial"
    mkdir "$BUNDLE.partial" && (cd "$HERE" && tar --exclude=./.venv --exclude=./.venv.partial -cf - .) | (cd "$BUNDLE.partial" && tar -xf -) \
      && mv "$BUNDLE.partial" "$BUNDLE" || refuse "could not be copied to $BUNDLE"
    made "$BUNDLE"
  fi
  same_file "$HERE/verify-bundle" "$BUNDLE/verify-bundle" || refuse "is in $BUNDLE with another verify-bundle; remove that folder"
  sh "$BUNDLE/verify-bundle" --all || refuse "failed its check once copied (above)"
  PREFIX="$BUNDLE/.venv"
  REQS="$BUNDLE/wheels/requirements.txt"
fi

STAMP_TEXT="$(sha256sum "$REQS" | cut -d' ' -f1) $PACKAGES"
make_env "$PREFIX" "$BUNDLE"

# The installed launcher: paths as quoted shell words, never pasted raw.
write_launcher "$PREFIX/bin/edge-run" "$PREFIX/bin/python" "$BUNDLE/edge-run"
[ -n "$ROOT" ] || echo "install.sh: run it with $HERE/edge-run (or $PREFIX/bin/edge-run)"

if [ -n "$ROOT" ]; then
  echo "install.sh: health check of $VERSION: its stored sample, at most ${HEALTH_TIMEOUT}s"
  status=0
  timeout -k 5 "$HEALTH_TIMEOUT" "$PREFIX/bin/edge-run" health "$BUNDLE" || status=$?
  case "$status" in
    0) ;;
    124|137) refuse "failed its health check: it did not finish within ${HEALTH_TIMEOUT}s (EDGEPACK_HEALTH_TIMEOUT)" ;;
    *) refuse "failed its health check (above)" ;;
  esac
  [ "$SERVICE" = 0 ] || probe_service
  write_launcher "$ROOT/bin/edge-run" "$ROOT/current/.venv/bin/python" "$ROOT/current/edge-run"
  if [ "$CURRENT" = "$VERSION" ]; then
    echo "install.sh: $VERSION is already current in $ROOT"
  else
    if [ -n "$CURRENT" ]; then
      point previous "$CURRENT" || refuse "could not point $ROOT/previous at $CURRENT"
    fi
    point current "$VERSION" || refuse "could not point $ROOT/current at it"
    FINISHED=1
    echo "install.sh: current is $VERSION${CURRENT:+ (previous: $CURRENT; install.sh --rollback --prefix $ROOT returns to it)}"
  fi
  FINISHED=1
  record_newest
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
