#!/usr/bin/env bash
# Installs the real FTP peers if missing, then runs the tests: `cargo test --all-targets`,
# with the arguments passed through. When the arguments select targets themselves
# (`--test NAME`, `--lib`, ...), `--all-targets` is left out, since cargo would run the
# union: `scripts/test.sh --test peers_direct` runs just that file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/install-test-peers.sh

all_targets=(--all-targets)
for arg in "$@"; do
    case $arg in
        --) break ;;
        --test | --test=* | --lib | --bin | --bin=* | --bins | --tests | --bench | --bench=* | \
            --benches | --example | --example=* | --examples | --doc | --all-targets)
            all_targets=()
            break
            ;;
    esac
done
exec cargo test "${all_targets[@]}" "$@"
