#!/usr/bin/env bash
# Installs what host/build.rs needs to build the built-in policies for
# wasm32-unknown-unknown (see host/build.rs and shared TOOLCHAIN.md):
# rustup's wasm32 target if rustup answers in time, else Debian's
# rustc-web + rust-web-src, which build core/alloc from source.
# Idempotent; safe to run on every CI start.
set -euo pipefail

target=wasm32-unknown-unknown
libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
if [[ -n "$libdir" ]] && compgen -G "$libdir/libcore-*" >/dev/null; then
    echo "install-wasm-toolchain: $target already installed"
    exit 0
fi

# rustup can hang on this network; give it a minute.
if timeout 60 rustup target add "$target"; then
    echo "install-wasm-toolchain: installed $target with rustup"
    exit 0
fi

echo "install-wasm-toolchain: rustup failed; installing rustc-web and rust-web-src" >&2
if [[ -x /usr/bin/rustc && -d /usr/lib/rustlib/src/rust/library ]]; then
    echo "install-wasm-toolchain: already installed"
    exit 0
fi
sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rustc-web rust-web-src
echo "install-wasm-toolchain: installed rustc-web and rust-web-src (build.rs falls back to -Zbuild-std)"
