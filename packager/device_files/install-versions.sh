# install.sh's versions under --prefix DIR, sourced by install.sh once verify-bundle has checked this bundle
# (it is one of the bundle's files): DIR's folders, the version rule (DIR/newest) and the --service probe.
# Plain function definitions: nothing runs when it is sourced.

# --prefix DIR: its folders (plain ones, never links elsewhere) and this version's name and folder.
prepare_prefix() {
  mkdir -p "$ROOT" || die "cannot create $ROOT; choose a --prefix you can write to"
  ROOT=$(cd "$ROOT" && pwd -P)
  for sub in versions bin; do
    [ ! -L "$ROOT/$sub" ] && { [ -d "$ROOT/$sub" ] || [ ! -e "$ROOT/$sub" ]; } \
      || die "$ROOT/$sub is not a plain folder (install.sh keeps its own there); remove it or choose another --prefix"
    mkdir -p "$ROOT/$sub" || die "cannot create $ROOT/$sub; choose a --prefix you can write to"
  done
  VERSION="$NAME-$(sha256sum "$HERE/manifest.json" | cut -c1-12)"
  BUNDLE="$ROOT/versions/$VERSION"
  CURRENT=$(version_of current)
  if [ -L "$BUNDLE" ] || { [ -e "$BUNDLE" ] && [ ! -d "$BUNDLE" ]; }; then
    rm -f "$BUNDLE" || die "cannot remove $BUNDLE, which is not a version folder"
  fi
}
refuse() {
  die "$VERSION $1; nothing changed: ${CURRENT:-no version} is still current in $ROOT"
}

# Versions only move forward: DIR/newest is install.sh's record of the newest creation time installed.
micros() {
  "$PYTHON" -I -c '
import datetime, sys
t = datetime.datetime.fromisoformat(sys.argv[1])
sys.exit(1) if t.tzinfo is None else print((t - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1))' "$1" 2>/dev/null
}
check_forward() {
  CREATED=$(sed -n 's/^  "created_at": "\(.*\)",\{0,1\}$/\1/p' "$HERE/manifest.json" | head -n 1)
  created=$(micros "$CREATED") || die "manifest.json's created_at is '$CREATED', not a time with its zone; rebuild the bundle"
  NEWEST="" was=""
  [ -e "$ROOT/newest" ] || [ -L "$ROOT/newest" ] || return 0
  [ -f "$ROOT/newest" ] && [ ! -L "$ROOT/newest" ] \
    && [ -z "$(find "$ROOT/newest" -prune \( ! -user "$(id -u)" -o -perm -020 -o -perm -002 \) -print)" ] \
    || die "$ROOT/newest is not install.sh's record (a plain file of user $(id -u) that no one else may write); remove it if this folder is yours (the next install writes it again)"
  NEWEST=$(head -c 100 "$ROOT/newest" | head -n 1 | tr -cd 'A-Za-z0-9:.+ -')
  was=$(micros "$NEWEST") || die "$ROOT/newest holds '$NEWEST', not a creation time like 2026-01-31T12:00:00+00:00; remove it (the next install writes it again)"
  [ "$created" -lt "$was" ] || return 0
  [ "$ALLOW_DOWNGRADE" = 0 ] || { echo "install.sh: $VERSION was built at $CREATED, before the newest installed ($NEWEST): installing it anyway (--allow-downgrade)"; return 0; }
  die "$VERSION was built at $CREATED, before the newest version installed in $ROOT ($NEWEST): versions only move forward; install.sh --rollback --prefix $ROOT returns to the previous one, --allow-downgrade installs an older one anyway"
}
record_newest() {
  [ -z "$was" ] || [ "$created" -gt "$was" ] || return 0
  rm -f "$ROOT/.newest.tmp" && printf '%s\n' "$CREATED" > "$ROOT/.newest.tmp" && chmod 644 "$ROOT/.newest.tmp" \
    && mv -f "$ROOT/.newest.tmp" "$ROOT/newest" \
    || echo "install.sh: warning: could not record $CREATED in $ROOT/newest (is the disk full?); older bundles are refused against ${NEWEST:-no record} until it is" >&2
}

# With --service: edge-run serve on a port the kernel picks; it passes once the server it started (still
# running) says ready and names this model and version. Nothing else answering on some port counts.
probe_service() {
  timeout -k 5 "$HEALTH_TIMEOUT" "$PREFIX/bin/edge-run" serve "$BUNDLE" --host 127.0.0.1 --port 0 \
    >/dev/null 2>"$TMPD/serve.err" &
  server=$! status=0
  "$PYTHON" -I -c '
import os, re, sys, time, urllib.request
pid, log, name, version = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
deadline, port = time.monotonic() + float(sys.argv[5]), None
def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False
def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
        return reply.status, reply.read().decode("utf-8", "replace")
while time.monotonic() < deadline and alive():
    with open(log, encoding="utf-8", errors="replace") as f:
        said = re.search(r"^edge-run serve: (\S+) on http://127\.0\.0\.1:(\d+) ", f.read(), re.M)
    if said:
        port = int(said.group(2))
        try:
            if get("/v2/health/ready")[0] == 200:
                info = [l for l in get("/metrics")[1].splitlines() if l.startswith("edge_run_model_info{")]
                ok = any(f"model=\"{name}\"" in l and f"version=\"{version}\"" in l for l in info)
                sys.exit(0 if ok and alive() and said.group(1) == name else 3)
        except OSError:
            pass
    time.sleep(0.5)
sys.exit(2 if not alive() else 1)' "$server" "$TMPD/serve.err" "$NAME" "$VERSION" "$HEALTH_TIMEOUT" || status=$?
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  case "$status" in
    0) echo "install.sh: edge-run serve $VERSION answered /v2/health/ready and named $NAME, $VERSION" ;;
    2) refuse "failed its health check: edge-run serve stopped before it was ready ($(tail -n 1 "$TMPD/serve.err" | head -c 300))" ;;
    3) refuse "failed its health check: the server that answered did not name $NAME, $VERSION" ;;
    *) refuse "failed its health check: edge-run serve was not ready (GET /v2/health/ready) within ${HEALTH_TIMEOUT}s" ;;
  esac
}
