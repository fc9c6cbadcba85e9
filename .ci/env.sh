# Shared set-up for the project's scripts (sourced, not run): installs what a fresh machine
# lacks and picks the one cargo profile and target directory every script builds with.
set -euo pipefail

# librocksdb-sys runs bindgen, which needs libclang (Debian: libclang-dev).
source "$(dirname "${BASH_SOURCE[0]}")/libclang.sh"
if ! find_libclang >/dev/null; then
  echo "installing libclang-dev (RocksDB's bindings need libclang; this machine has none)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
  find_libclang >/dev/null || { echo "error: libclang-dev installed but no libclang.so found" >&2; exit 1; }
fi

# One target directory outside the clone, shared by every script and every clone on this
# machine, so RocksDB's C++ (about 18 minutes) compiles once. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rackpoint-target}"
# Everything builds in release: one profile, so RocksDB compiles once.
CARGO_PROFILE_FLAG="--release"
