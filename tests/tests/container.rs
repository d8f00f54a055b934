//! Containers: a server moved into a cgroup laid out as containerd lays out a Kubernetes pod's
//! container (`kubepods.slice/kubepods-pod<uid>.slice/cri-containerd-<id>.scope`) is targeted
//! with `--container <prefix>`; its exchanges carry that `container.id` and the pod's UID.

use std::path::PathBuf;

use observer_tests::{Observer, Server, curl, require_root};

/// Cgroups made for the test, removed deepest first when it ends.
struct Tree(Vec<PathBuf>);

impl Drop for Tree {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount in /proc/mounts (it may be /sys/fs/cgroup/unified)")
}

#[test]
fn a_containerd_pod_container_is_targeted_by_id_prefix_and_named_in_events() {
    require_root();
    let seed = std::process::id() as u64 ^ 0x5eed_0000_0000;
    let id = format!(
        "{seed:016x}{:016x}{:016x}{:016x}",
        !seed,
        seed.rotate_left(7),
        42u64
    );
    let pod = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        seed as u32,
        (seed >> 32) as u16,
        seed & 0xfff,
        (seed >> 12) & 0xfff,
        seed
    );
    let base = cgroup2_mount().join("kubepods.slice");
    let pod_dir = base.join(format!("kubepods-pod{}.slice", pod.replace('-', "_")));
    let scope = pod_dir.join(format!("cri-containerd-{id}.scope"));
    let made_base = !base.exists();
    std::fs::create_dir_all(&scope).expect("creating the pod's cgroups");
    let mut dirs = Vec::new();
    if made_base {
        dirs.push(base.clone());
    }
    dirs.extend([pod_dir, scope.clone()]);
    let _tree = Tree(dirs);

    let server = Server::api_in_cgroup(&scope);
    let obs = Observer::start(&["--container".into(), id[..12].to_string()]);
    assert_eq!(curl(&[&server.url("/health")]).status, 200);
    let denied = curl(&[&server.url("/admin")]).status;
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let done = obs.stop();
    let exchanges = done.exchanges();
    assert_eq!(exchanges.len(), 2, "{}", done.stderr);
    assert_eq!(
        exchanges[1]["http"]["response"]["status_code"].as_u64(),
        Some(u64::from(denied))
    );
    for e in &exchanges {
        assert_eq!(e["process"]["pid"], server.pid());
        assert_eq!(e["container"]["id"], id.as_str(), "{e}");
        assert_eq!(e["container"]["runtime"], "containerd", "{e}");
        assert_eq!(e["orchestrator"]["type"], "kubernetes");
        assert_eq!(e["orchestrator"]["resource"]["type"], "pod");
        assert_eq!(e["orchestrator"]["resource"]["id"], pod.as_str(), "{e}");
    }
}

#[test]
fn an_unknown_container_is_refused_at_start_with_the_layouts_named() {
    require_root();
    let out = std::process::Command::new(observer_tests::observer_bin())
        .args(["run", "--container", "0123456789abcdef0123"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cgroup below"), "{err}");
    assert!(err.contains("cri-containerd-ID.scope"), "{err}");
}
