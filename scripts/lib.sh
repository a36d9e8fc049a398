# Shared helpers for scripts/*.sh (sourced, not run).

# Debian packages the tests and the local stack need, and a binary that proves each is there.
CITADEL_PACKAGES=(
  "postgresql:initdb"
  "postgresql-client:psql"
  "prometheus:prometheus"
  "prometheus-alertmanager:prometheus-alertmanager"
  "prometheus-pushgateway:prometheus-pushgateway"
  "nginx-light:nginx"
  "openssl:openssl"
  "python3-minimal:python3"
  "chromium:chromium"
)

pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  command -v "$1" 2>/dev/null
}

have_binary() {
  case "$1" in
    initdb|postgres|pg_ctl) [ -n "$(pg_bin "$1")" ] ;;
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# Install what is missing (as root, with apt-get), or say what to install.
ensure_packages() {
  local missing=() entry pkg bin
  for entry in "${CITADEL_PACKAGES[@]}"; do
    pkg=${entry%%:*}; bin=${entry#*:}
    have_binary "$bin" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  # Keep package scripts from starting system services (they would listen beyond loopback).
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [ "$created" -eq 1 ] && rm -f "$policy"
  if [ "$rc" -ne 0 ]; then
    echo "apt-get install failed (exit $rc) for: ${missing[*]}" >&2
    return "$rc"
  fi
  for entry in "${CITADEL_PACKAGES[@]}"; do
    pkg=${entry%%:*}; bin=${entry#*:}
    have_binary "$bin" || { echo "package $pkg installed but $bin not found" >&2; return 1; }
  done
}
