#!/usr/bin/env bash
# Builds the release binary and generates what the Debian package ships besides it
# (`[package.metadata.deb]` in Cargo.toml): the man page and the shell completions, into
# target/assets/. Then `cargo deb --no-build` packages them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bin fxprelay
bin=target/release/fxprelay
mkdir -p target/assets
"$bin" man | gzip -9n >target/assets/fxprelay.1.gz
"$bin" completions bash >target/assets/fxprelay.bash
"$bin" completions zsh >target/assets/_fxprelay
"$bin" completions fish >target/assets/fxprelay.fish
echo "package-assets: target/assets/ ready; now: cargo deb --no-build" >&2
