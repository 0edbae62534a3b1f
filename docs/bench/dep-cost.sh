#!/usr/bin/env bash
# What the HTTP crates (httpdate, mime_guess, percent-encoding, html-escape)
# cost in build time and binary size.
#
#   bash docs/bench/dep-cost.sh BEFORE AFTER
#
# 1. For each of the two commits: a clean `cargo build --release --example
#    file_server` in a fresh checkout and an empty target directory, its
#    wall time, and the size of the stripped binary.
# 2. Each crate alone: a small program that calls it, built with the
#    project's release profile (codegen-units = 1, thin LTO), stripped,
#    against the same program without it.
# Everything is made under a temporary directory, removed at the end.
set -euo pipefail
before=${1:?usage: dep-cost.sh BEFORE AFTER}
after=${2:?usage: dep-cost.sh BEFORE AFTER}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "| commit | clean release build of file_server | stripped file_server |"
echo "|---|---|---|"
for rev in "$before" "$after"; do
    git -C "$root" worktree add -q --detach "$work/$rev" "$rev"
    start=$(date +%s.%N)
    (cd "$work/$rev" && CARGO_TARGET_DIR="$work/target-$rev" cargo build -q --release --example file_server)
    end=$(date +%s.%N)
    strip -o "$work/fs-$rev" "$work/target-$rev/release/examples/file_server"
    printf '| %s | %.1f s | %s bytes |\n' "$rev" "$(echo "$end - $start" | bc)" "$(stat -c %s "$work/fs-$rev")"
    git -C "$root" worktree remove --force "$work/$rev"
done

mkdir -p "$work/one/src"
cat > "$work/one/Cargo.toml" <<'TOML'
[package]
name = "one"
version = "0.1.0"
edition = "2021"
[dependencies]
httpdate = "1"
mime_guess = { version = "2", default-features = false }
percent-encoding = "2"
html-escape = "0.2"
[features]
httpdate = []
mime_guess = []
percent-encoding = []
html-escape = []
[profile.release]
codegen-units = 1
lto = "thin"
TOML
cat > "$work/one/src/main.rs" <<'RUST'
fn main() {
    let arg = std::env::args().next().unwrap_or_default();
    #[cfg(feature = "httpdate")]
    println!("{:?}", httpdate::parse_http_date(&arg).map(httpdate::fmt_http_date));
    #[cfg(feature = "mime_guess")]
    println!("{:?}", mime_guess::from_path(&arg).first_raw());
    #[cfg(feature = "percent-encoding")]
    println!("{}", percent_encoding::utf8_percent_encode(&arg, percent_encoding::NON_ALPHANUMERIC));
    #[cfg(feature = "html-escape")]
    println!("{}", html_escape::encode_quoted_attribute(&arg));
    println!("{}", arg.len());
}
RUST
echo
echo "| crate | stripped program | added |"
echo "|---|---|---|"
base=0
for feature in none httpdate mime_guess percent-encoding html-escape; do
    flags=()
    [ "$feature" = none ] || flags=(--features "$feature")
    (cd "$work/one" && CARGO_TARGET_DIR="$work/target-one" cargo build -q --release "${flags[@]}")
    strip -o "$work/one-$feature" "$work/target-one/release/one"
    size=$(stat -c %s "$work/one-$feature")
    [ "$feature" = none ] && base=$size
    echo "| $feature | $size bytes | $((size - base)) bytes |"
done
