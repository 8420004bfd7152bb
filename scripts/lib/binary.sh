# Sourced by the bench scripts: sets `cairn`, the binary they run. CAIRN_BIN when set; else this
# tree's `dist` build (Cargo.toml's `[profile.dist]`, the build to deploy; CARGO_TARGET_DIR is
# honoured), built first when it is missing. Also sets `root`, the repository's top directory.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cairn="${CAIRN_BIN:-${CARGO_TARGET_DIR:-$root/target}/dist/cairn}"
[ -x "$cairn" ] || [ -n "${CAIRN_BIN:-}" ] || (cd "$root" && cargo build --profile dist -p cairn)
[ -x "$cairn" ] || { echo "no cairn binary at $cairn" >&2; exit 1; }
