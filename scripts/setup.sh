#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 (or 13) machine, run before every README
# command. When everything is already in place it only checks, in a few seconds.
#   - system packages: PostgreSQL 15, Mosquitto, pgBackRest (backups), build tools, Chromium,
#     its driver and a Chinese font for the dashboards' browser test
#   - TimescaleDB: the distribution package where one exists, else built (Apache-2
#     edition) from Debian 13's `timescaledb` source package
#   - a virtualenv in .venv with the project installed editable with its dev extras
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TIDEFIELD_VENV:-$ROOT/.venv}
PG_MAJOR=${TIDEFIELD_PG_MAJOR:-15}
log() { printf '[setup] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
}

# --- system packages ------------------------------------------------------------
SYSTEM_PACKAGES=(
  "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" postgresql-contrib
  mosquitto mosquitto-clients pgbackrest
  build-essential cmake libssl-dev dpkg-dev
  chromium chromium-driver fonts-wqy-microhei
)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- TimescaleDB ----------------------------------------------------------------
PG_SHARE=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/$PG_MAJOR)
if [ ! -f "$PG_SHARE/extension/timescaledb.control" ]; then
  apt_update_once
  if apt-cache show "postgresql-$PG_MAJOR-timescaledb" >/dev/null 2>&1; then
    log "installing postgresql-$PG_MAJOR-timescaledb from the distribution"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_MAJOR-timescaledb" >/dev/null
  else
    log "building TimescaleDB (Apache-2 edition) from Debian 13's source package"
    # deb-src for trixie on the mirror the machine already uses; sources only, so no
    # binary package of trixie can ever be installed through it.
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
               | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security \
               | head -n1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    srcfile=/etc/apt/sources.list.d/tidefield-trixie-src.sources
    if [ ! -f "$srcfile" ]; then
      printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" | as_root tee "$srcfile" >/dev/null
      APT_UPDATED=0
    fi
    apt_update_once
    build=$(mktemp -d); chmod 755 "$build"
    ( cd "$build" && apt-get source -qq timescaledb >/dev/null ) || { log "apt-get source timescaledb failed"; exit 1; }
    src=$(find "$build" -maxdepth 1 -type d -name 'timescaledb-*' | head -n1)
    [ -n "$src" ] || { log "apt-get source timescaledb failed"; exit 1; }
    ( cd "$src" && ./bootstrap -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF \
        -DTAP_CHECKS=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF \
        -DPG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config >/dev/null \
      && make -C build -j"$(nproc)" >/dev/null 2>&1 && as_root make -C build install >/dev/null 2>&1 ) \
      || { log "TimescaleDB build failed in $src"; exit 1; }
    rm -rf "$build"
  fi
  [ -f "$PG_SHARE/extension/timescaledb.control" ] || { log "TimescaleDB install failed"; exit 1; }
fi

# --- Python ---------------------------------------------------------------------
PYTHON=${TIDEFIELD_PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV" 2>/dev/null || {
    apt_update_once; as_root apt-get install -y -qq python3-venv >/dev/null; "$PYTHON" -m venv "$VENV"; }
fi
# Reinstall only when the project's metadata changed since the last install.
stamp="$VENV/.tidefield-installed"
want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c "import tidefield.protocol" 2>/dev/null; then
  log "installing tidefield and its dev dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
  echo "$want" > "$stamp"
fi
log "ready"
