//! The check on tiny synthetic trees, and on this workspace.

use super::scan::{paths, resolve, strip};
use super::*;

/// A throwaway workspace with these files (path, contents).
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let root = std::env::temp_dir().join(format!("xtask-layout-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, text) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        Tree(root)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_clean_tree_passes() {
    let t = Tree::new(
        "clean",
        &[
            (
                "observer/src/lib.rs",
                "pub mod addr;\npub mod capture;\npub mod event;\n",
            ),
            ("observer/src/addr.rs", "pub struct SockAddr;\n"),
            (
                "observer/src/capture/mod.rs",
                "use aya::Ebpf;\nuse crate::addr::SockAddr;\nmod decode;\n",
            ),
            (
                "observer/src/capture/decode.rs",
                "use super::super::addr::SockAddr;\n",
            ),
            (
                "observer/src/event/mod.rs",
                "// crate::capture::X in a comment\nconst S: &str = \"crate::sink::Y\";\n\
                 use crate::{addr::SockAddr};\n",
            ),
        ],
    );
    assert_eq!(violations(&t.0).unwrap(), Vec::<String>::new());
}

#[test]
fn a_cycle_is_found() {
    let t = Tree::new(
        "cycle",
        &[
            ("observer/src/conn/mod.rs", "use crate::http::HttpConn;\n"),
            ("observer/src/http/mod.rs", "pub mod h1;\n"),
            (
                "observer/src/http/h1.rs",
                "fn f() -> crate::event::ConnView { todo!() }\n",
            ),
            (
                "observer/src/event/mod.rs",
                "use crate::{addr::X, conn::Role};\n",
            ),
            ("observer/src/addr.rs", "\n"),
        ],
    );
    let v = violations(&t.0).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("import cycle"), "{v:?}");
    assert!(v[0].contains("conn → http → event → conn"), "{v:?}");
}

#[test]
fn forbidden_imports_and_aya_outside_capture_are_found() {
    let t = Tree::new(
        "forbidden",
        &[
            ("observer/src/capture/mod.rs", "use aya::Ebpf;\n"),
            (
                "observer/src/detect/mod.rs",
                "\n\nfn f() { let _ = crate::capture::decode(&[]); }\n",
            ),
            ("observer/src/sink/mod.rs", "use crate::detect::Rule;\n"),
            ("observer/src/conn/mod.rs", "use aya_log::EbpfLogger;\n"),
        ],
    );
    let v = violations(&t.0).unwrap();
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(
        v.iter().any(|l| l.contains("observer/src/detect/mod.rs:3")
            && l.contains("`detect` imports `capture`")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|l| l.contains("`sink` imports `detect`")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|l| l.contains("`conn` uses aya") && l.contains("conn/mod.rs:1")),
        "{v:?}"
    );
}

#[test]
fn long_files_are_found() {
    let long = "//\n".repeat(MAX_LINES + 1);
    let t = Tree::new(
        "long",
        &[
            ("xtask/src/bench.rs", &long),
            ("observer-ebpf/src/main.rs", &long),
            ("observer-ebpf/src/io.rs", &"//\n".repeat(MAX_LINES)),
            ("observer/src/capture/mod.rs", &long),
            ("tests/src/lib.rs", "fn ok() {}\n"),
        ],
    );
    let v = violations(&t.0).unwrap();
    assert_eq!(v.len(), 3, "{v:?}");
    for file in [
        "xtask/src/bench.rs",
        "observer-ebpf/src/main.rs",
        "observer/src/capture/mod.rs",
    ] {
        let said = format!("{file}: 601 lines");
        assert!(v.iter().any(|l| l.starts_with(&said)), "{v:?}");
    }
}

#[test]
fn paths_are_resolved_from_their_module() {
    let m = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        resolve(&m(&["http", "h1"]), &m(&["super", "Side"])),
        Some("http".into())
    );
    assert_eq!(
        resolve(&m(&["http"]), &m(&["super", "event", "X"])),
        Some("event".into())
    );
    assert_eq!(
        resolve(&m(&["http"]), &m(&["crate", "sink"])),
        Some("sink".into())
    );
    assert_eq!(resolve(&m(&[]), &m(&["super", "x"])), None);
    assert_eq!(resolve(&m(&["a"]), &m(&["std", "x"])), None);
    let found = paths(&strip(
        "use crate::{a::{B, C}, d};\nlet x = 'c'; crate::e::f();\n",
    ));
    let roots: Vec<String> = found.iter().map(|(_, p)| p[1].clone()).collect();
    assert_eq!(roots, ["a", "a", "d", "e"]);
    assert_eq!(found[3].0, 2);
}

#[test]
fn the_workspace_keeps_its_layout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert_eq!(violations(root).unwrap(), Vec::<String>::new());
}
