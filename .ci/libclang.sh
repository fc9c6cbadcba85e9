# libclang detection for RocksDB's bindgen step (sourced by env.sh and by the test that checks
# it; defines functions only). bindgen loads `libclang.so` or `libclang-<N>.so` through
# clang-sys. A bare Debian machine ships `libclang-cpp.so.<N>`, a different library that
# bindgen cannot use, so a loose glob such as `libclang*.so*` must not count it.

# The folders clang-sys searches, in its order: $LIBCLANG_PATH, `llvm-config --libdir`, then
# the system's library folders.
libclang_search_dirs() {
  [ -n "${LIBCLANG_PATH:-}" ] && printf '%s\n' "$LIBCLANG_PATH"
  command -v llvm-config >/dev/null 2>&1 && llvm-config --libdir 2>/dev/null || true
  local d
  for d in /usr/lib/llvm-*/lib /usr/local/llvm*/lib /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib; do
    [ -d "$d" ] && printf '%s\n' "$d"
  done
  return 0
}

# True when a file bindgen loads is in one of the folders given (default: clang-sys's folders),
# and prints its path.
find_libclang() {
  local dirs=("$@") d f name
  [ ${#dirs[@]} -gt 0 ] || mapfile -t dirs < <(libclang_search_dirs)
  for d in "${dirs[@]}"; do
    for f in "$d"/libclang.so "$d"/libclang-*.so; do
      [ -e "$f" ] || continue
      name="${f##*/}"
      # libclang.so, or libclang-<version>.so with a version of digits and dots only.
      if [[ "$name" == libclang.so || "$name" =~ ^libclang-[0-9][0-9.]*\.so$ ]]; then
        printf '%s\n' "$f"
        return 0
      fi
    done
  done
  return 1
}
