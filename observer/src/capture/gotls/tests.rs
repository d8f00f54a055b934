//! The analysis on real Go executables, built here from tests/servers/go with the Go
//! toolchain on the PATH (`cargo xtask setup` installs Debian's golang-go), checked against
//! Go's own disassembler.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSegment};

use super::analyze::{Analysis, GoTls, Lookup, READ, WRITE, analyze_file};
use super::fields::Source;

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gotls-tests")
}

/// Builds package `pkg` of tests/servers/go (or the directory `pkg` itself when absolute) into
/// `out` with `args` (once): static (no cgo), unless `out` ends in `-pie`.
fn go_build(out: &str, pkg: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = work_dir();
    let bin = dir.join(out);
    if bin.exists() {
        return bin;
    }
    let (src, pkg) = if Path::new(pkg).is_absolute() {
        (PathBuf::from(pkg), ".")
    } else {
        (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/servers/go"),
            pkg,
        )
    };
    let status = Command::new("go")
        .arg("build")
        .args(args)
        .arg("-o")
        .arg(&bin)
        .arg(pkg)
        .current_dir(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", if out.ends_with("-pie") { "1" } else { "0" })
        .envs(env.iter().copied())
        .status()
        .expect("running go (cargo xtask setup installs golang-go)");
    assert!(status.success(), "go build {pkg} failed");
    bin
}

fn server() -> PathBuf {
    go_build("server", "./server", &[], &[])
}

fn stripped() -> PathBuf {
    go_build("server-stripped", "./server", &["-ldflags=-s -w"], &[])
}

fn hookable(path: &Path) -> GoTls {
    match analyze_file(path) {
        Analysis::Hookable(t) => *t,
        other => panic!("{}: {other:?}", path.display()),
    }
}

/// The file offsets of the RETs in `func`, by `go tool objdump`.
fn go_objdump_returns(bin: &Path, func: &str) -> (u64, Vec<u64>) {
    let pattern = format!("^{}$", regex_escape(func));
    let out = Command::new("go")
        .args(["tool", "objdump", "-s", &pattern])
        .arg(bin)
        .output()
        .expect("go tool objdump");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut first = None;
    let mut rets = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(op)) = (cols.get(1), cols.get(3)) else {
            continue;
        };
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        first.get_or_insert(addr);
        if *op == "RET" {
            rets.push(addr);
        }
    }
    let data = std::fs::read(bin).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let to_file = |v: u64| {
        file.segments()
            .find_map(|s| {
                let (off, size) = s.file_range();
                (v >= s.address() && v < s.address() + size).then(|| v - s.address() + off)
            })
            .unwrap()
    };
    (
        to_file(first.expect("objdump listed the function")),
        rets.into_iter().map(to_file).collect(),
    )
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "()*.".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

#[test]
fn gotls_symbols_dwarf_and_every_ret_of_a_go_build() {
    let pie = go_build("server-pie", "./server", &["-buildmode=pie"], &[]);
    let kind = |bin: &Path| {
        let out = Command::new("file").arg(bin).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        kind(&server()).contains("statically linked"),
        "{}",
        kind(&server())
    );
    assert!(kind(&pie).contains("pie executable"), "{}", kind(&pie));
    for bin in [server(), pie] {
        let tls = hookable(&bin);
        assert!(tls.info.version.starts_with("go1."), "{:?}", tls.info);
        assert_eq!(tls.info.module.as_deref(), Some("observer.test/goservers"));
        assert_eq!(tls.lookup, Lookup::Symbols);
        assert_eq!(tls.offsets_from, Source::Dwarf);
        // The DWARF of this build agrees with the table used for builds without it.
        assert_eq!(tls.offsets, super::fields::TABLE);
        for (func, hook) in [(READ, &tls.read), (WRITE, &tls.write)] {
            let (entry, rets) = go_objdump_returns(&bin, func);
            assert_eq!(hook.entry, entry, "{func} in {}", bin.display());
            assert_eq!(hook.returns, rets, "{func} in {}", bin.display());
            assert!(!rets.is_empty());
        }
        let data = std::fs::read(&bin).unwrap();
        for hook in [&tls.read, &tls.write] {
            for &r in &hook.returns {
                assert_eq!(data[r as usize], 0xc3, "a RET at {r:#x}");
            }
        }
    }
}

#[test]
fn gotls_stripped_build_is_found_through_its_function_table() {
    let full = hookable(&server());
    let bin = stripped();
    let tls = hookable(&bin);
    assert_eq!(tls.lookup, Lookup::Pclntab);
    assert_eq!(tls.offsets_from, Source::Table);
    assert_eq!(tls.info, full.info);
    // Stripping leaves the text where it was.
    assert_eq!((&tls.read, &tls.write), (&full.read, &full.write));
    let out = Command::new("nm").arg(&bin).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("crypto/tls"),
        "really stripped"
    );
}

/// A copy of `bin` with `from` replaced by `to` (same length) at its first occurrence after
/// `after`.
fn patched(bin: &Path, name: &str, after: &[u8], from: &[u8], to: &[u8]) -> PathBuf {
    let mut data = std::fs::read(bin).unwrap();
    let start = memchr::memmem::find(&data, after).expect("the bytes to patch after");
    let at = start + memchr::memmem::find(&data[start..], from).expect("the bytes to patch");
    data[at..at + to.len()].copy_from_slice(to);
    let out = work_dir().join(name);
    std::fs::write(&out, data).unwrap();
    out
}

const BUILDINFO: &[u8] = b"\xff Go buildinf:";

fn unsupported(path: &Path) -> String {
    match analyze_file(path) {
        Analysis::Unsupported(why) => why,
        other => panic!("{}: {other:?}", path.display()),
    }
}

#[test]
fn gotls_what_cannot_be_hooked_says_why() {
    let bin = stripped();
    let tls = hookable(&bin);
    let version = tls.info.version.as_bytes();
    // The section header's name gone: no symbols and no table.
    let hidden = patched(&bin, "no-pclntab", b"", b".gopclntab\0", b".gopclnta_\0");
    let why = unsupported(&hidden);
    assert!(why.contains("no symbols and no function table"), "{why}");
    // The table's magic damaged.
    let data = std::fs::read(&bin).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let magic = object::ObjectSection::data(&file.section_by_name(".gopclntab").unwrap())
        .unwrap()
        .get(..8)
        .unwrap()
        .to_vec();
    let mut bad = magic.clone();
    bad[0] ^= 0x55;
    let damaged = patched(&bin, "bad-magic", b"", &magic, &bad);
    let why = unsupported(&damaged);
    assert!(why.contains("unknown magic"), "{why}");
    // Versions outside the register ABI and the known releases.
    let mut old = version.to_vec();
    old[..6].copy_from_slice(b"go1.16");
    let why = unsupported(&patched(&bin, "go116", BUILDINFO, version, &old));
    assert!(why.contains("on the stack"), "{why}");
    let mut new = version.to_vec();
    new[..6].copy_from_slice(b"go1.99");
    let why = unsupported(&patched(&bin, "go199", BUILDINFO, version, &new));
    assert!(
        why.contains("newer than the releases observer knows"),
        "{why}"
    );
    assert!(why.contains("module observer.test/goservers"), "{why}");
    // Another architecture.
    let arm = go_build("server-arm64", "./server", &[], &[("GOARCH", "arm64")]);
    let why = unsupported(&arm);
    assert!(why.contains("x86-64 only"), "{why}");
}

#[test]
fn gotls_other_programs_are_told_apart() {
    let exe = std::env::current_exe().unwrap();
    assert_eq!(analyze_file(&exe), Analysis::NotGo);
    assert_eq!(analyze_file(Path::new("/nonexistent")), Analysis::NotGo);
    let dir = work_dir().join("plain-src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("go.mod"), "module example.com/plain\n\ngo 1.19\n").unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
    )
    .unwrap();
    let bin = go_build("plain", dir.to_str().unwrap(), &[], &[]);
    match analyze_file(&bin) {
        Analysis::NoTls(info) => assert_eq!(info.module.as_deref(), Some("example.com/plain")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gotls_decoding_skips_endbr64_and_refuses_garbage() {
    // endbr64; ret; int3; mov eax, 1; ret
    let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xc3, 0xcc, 0xb8, 1, 0, 0, 0, 0xc3];
    let (entry, rets) = super::analyze::decode(&code, 0x1000).unwrap();
    assert_eq!(entry, 0x1004);
    assert_eq!(rets, [0x1004, 0x100b]);
    assert!(super::analyze::decode(&[0x90, 0x90], 0).is_err(), "no RET");
    assert!(super::analyze::decode(&[0x0f, 0xff], 0).is_err(), "invalid");
}
