#!/usr/bin/env bash
# Installs the real FTP peers if missing, then runs the tests: `cargo test --lib --bins
# --tests` (benchmarks are measured with `cargo bench`, not run here), with the arguments
# passed through. When the arguments select targets themselves (`--test NAME`, `--lib`,
# ...), the default selection is left out, since cargo would run the union:
# `scripts/test.sh --test peers_direct` runs just that file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/install-test-peers.sh

all_targets=(--lib --bins --tests)
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
