#!/usr/bin/env bash
# Builds the release binary and generates what the Debian package ships besides it
# (`[package.metadata.deb]` in Cargo.toml): the man pages and the shell completions, into
# target/assets/. Then `cargo deb --no-build` packages them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bin fxprelay
bin=target/release/fxprelay
# `strip = true` in Cargo.toml's release profile: the package ships no symbol table.
if readelf -S "$bin" | grep -q '\.symtab'; then
    echo "package-assets: $bin still has a symbol table; is [profile.release] strip = true?" >&2
    exit 1
fi
rm -rf target/assets/man
mkdir -p target/assets/man
# fxprelay.1 and a page per command (fxprelay-run.1, fxprelay-fxp.1, ...).
"$bin" man --dir target/assets/man
gzip -9n target/assets/man/*.1
"$bin" completions bash >target/assets/fxprelay.bash
"$bin" completions zsh >target/assets/_fxprelay
"$bin" completions fish >target/assets/fxprelay.fish
echo "package-assets: target/assets/ ready; now: cargo deb --no-build" >&2
