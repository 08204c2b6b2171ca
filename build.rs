// `sqlx::migrate!` embeds the migrations at compile time but only notices edits
// to files it already knows; a new migration file must rebuild the crate too.
//
// Release builds of the gateway on x86-64 Linux, linked by rustc's lld, lay
// out its functions in the order of benches/symbol-order.txt (the ones it
// runs, hottest first): the kernel maps an executable 64 KiB around each
// page fault, so scattered, the few MiB of code it runs kept most of its
// 15 MiB of text resident. They also pack its relative relocations where
// glibc reads the packed form (benches/README.md, "The executable's pages,
// laid out by use").
use std::process::Command;

const ORDER: &str = "benches/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=BLUESMINDS_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if std::env::var("PROFILE").as_deref() != Ok("release") || !links_with_rust_lld() {
        return;
    }
    // The position-independent executable's relative relocations as a bitmap
    // (DT_RELR) instead of 24-byte entries: the loader reads the whole table
    // at start-up and it stayed resident, 686 KiB of it.
    if glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=bluesminds=-Wl,-z,pack-relative-relocs");
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = format!("{dir}/{ORDER}");
    // A source tree without benches/ (a trimmed copy) still builds.
    if std::env::var("BLUESMINDS_SYMBOL_ORDER").as_deref() == Ok("0")
        || !std::path::Path::new(&order).exists()
    {
        return;
    }
    println!("cargo:rustc-link-arg-bin=bluesminds=-Wl,--symbol-ordering-file={order}");
    // Symbols of other builds (a changed dependency, another target) are skipped.
    println!("cargo:rustc-link-arg-bin=bluesminds=-Wl,--no-warn-symbol-ordering");
}

/// Whether this machine's C library loads DT_RELR (glibc 2.36 and later mark
/// that with the version GLIBC_ABI_DT_RELR, which the linker then makes the
/// binary require). A binary built here and copied to an older system stops
/// at start with the loader's "version `GLIBC_ABI_DT_RELR' not found", as it
/// would for the newer symbol versions it already needs.
fn glibc_reads_relr() -> bool {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .is_some_and(|libc| {
        libc.windows(b"GLIBC_ABI_DT_RELR".len())
            .any(|w| w == b"GLIBC_ABI_DT_RELR")
    })
}

/// Whether the binary is linked by rustc's own lld, which knows the option:
/// the default for x86_64-unknown-linux-gnu since Rust 1.90, unless a linker
/// is chosen (cargo tells a build script the linker it was given, from its
/// config or the environment, in RUSTC_LINKER). GNU ld, which `cc` runs
/// elsewhere, refuses the option.
fn links_with_rust_lld() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("TARGET") != "x86_64-unknown-linux-gnu"
        || !env("RUSTC_LINKER").is_empty()
        || env("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    let version = Command::new(env("RUSTC"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "rustc 1.95.0 (...)"
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
