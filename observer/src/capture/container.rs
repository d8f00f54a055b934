//! Containers from cgroup paths: the container id (and the Kubernetes pod UID) a cgroup path
//! names in the layouts of docker, containerd/CRI-O and podman, under systemd or cgroupfs
//! drivers, and the cgroup of a container given by id or unique prefix. Reads /proc and the
//! cgroup2 tree, both untrusted; imports only `target` of the crate.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::target::{TargetError, cgroup2_mount};

/// Directories looked at when searching the cgroup tree for a container.
const MAX_CGROUP_DIRS: usize = 100_000;
/// Deepest cgroup searched (kubepods.slice/kubepods-burstable.slice/...-pod.slice/x.scope is 4).
const MAX_DEPTH: usize = 12;

/// What a cgroup path says about the container a process runs in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerIds {
    /// 64 lowercase hex digits.
    pub id: String,
    /// `docker`, `containerd`, `cri-o` or `podman`, when the path says; `None` for the bare
    /// cgroupfs layout (`kubepods/.../pod<uid>/<id>`), which any CRI runtime uses.
    pub runtime: Option<String>,
    /// The Kubernetes pod's UID (with dashes), when the path is below a pod's cgroup.
    pub pod_uid: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    #[error(
        "--container {0:?}: a container id is hexadecimal (docker ps shows its first 12 digits)"
    )]
    NotHex(String),
    #[error(
        "--container {0}: no cgroup below {1} names that container (layouts recognised: \
         docker-ID.scope, docker/ID, cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope, \
         kubepods/.../podUID/ID)"
    )]
    NotFound(String, PathBuf),
    #[error("--container {0} is ambiguous: it starts {1} and {2}; give more digits")]
    Ambiguous(String, String, String),
    #[error(transparent)]
    Target(#[from] TargetError),
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id one path component names, with its runtime when the name tells it.
fn component_id(c: &str) -> Option<(String, Option<&'static str>)> {
    let base = c.strip_suffix(".scope").unwrap_or(c);
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = base.strip_prefix(prefix)
            && is_id(id)
        {
            return Some((id.to_string(), Some(runtime)));
        }
    }
    // cgroupfs drivers name the container's cgroup by its bare id (docker/ID, kubepods/.../ID).
    is_id(base).then(|| (base.to_string(), None))
}

/// The pod UID one path component names: `pod<uid>` (cgroupfs) or
/// `kubepods[-qos]-pod<uid with _>.slice` (systemd).
fn component_pod(c: &str) -> Option<String> {
    let base = c.strip_suffix(".slice").unwrap_or(c);
    let uid = base.rsplit_once("-pod").map_or_else(
        || base.strip_prefix("pod"),
        |(head, uid)| head.starts_with("kubepods").then_some(uid),
    )?;
    let uid = uid.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| uid.to_ascii_lowercase())
}

/// The container a cgroup path (as /proc/PID/cgroup prints it) belongs to, if any: the
/// deepest component naming an id, and the pod above it.
pub fn from_cgroup_path(path: &str) -> Option<ContainerIds> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, (id, runtime)) = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| component_id(c).map(|x| (i, x)))?;
    let pod_uid = parts.get(..at)?.iter().rev().find_map(|c| component_pod(c));
    let runtime = runtime
        .or_else(|| parts.contains(&"docker").then_some("docker"))
        .map(str::to_string);
    Some(ContainerIds {
        id,
        runtime,
        pod_uid,
    })
}

/// The container of process `pid`, from /proc/PID/cgroup (the cgroup2 line first, then any
/// v1 hierarchy's, for hybrid hosts whose runtimes place containers there).
pub fn of_process(pid: u32) -> Option<ContainerIds> {
    let text = std::fs::read(format!("/proc/{pid}/cgroup")).ok()?;
    // Bounded: the kernel writes a few lines; a path longer than this names no container.
    let text = String::from_utf8_lossy(&text[..text.len().min(16 << 10)]).into_owned();
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    v2.into_iter().chain(paths).find_map(from_cgroup_path)
}

/// The cgroup (below the cgroup2 mount) of the container whose id is or starts with `arg`.
pub fn find_cgroup(arg: &str) -> Result<PathBuf, ContainerError> {
    let want = arg.trim().to_ascii_lowercase();
    if want.is_empty() || want.len() > 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContainerError::NotHex(arg.to_string()));
    }
    let mount = cgroup2_mount()?;
    find_below(&mount, &want)?.ok_or_else(|| ContainerError::NotFound(arg.to_string(), mount))
}

/// The shallowest directory below `root` whose path names a container starting with `want`;
/// an error when two different containers match.
fn find_below(root: &Path, want: &str) -> Result<Option<PathBuf>, ContainerError> {
    let mut found: Option<(String, PathBuf)> = None;
    let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut seen = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        seen += 1;
        if seen > MAX_CGROUP_DIRS {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            let name = e.file_name();
            if let Some((id, _)) = name.to_str().and_then(component_id)
                && id.starts_with(want)
            {
                match &found {
                    Some((other, _)) if *other != id => {
                        return Err(ContainerError::Ambiguous(want.into(), other.clone(), id));
                    }
                    // Shallower first (breadth-first): a runtime's sub-cgroups stay inside.
                    Some(_) => {}
                    None => found = Some((id, path.clone())),
                }
                continue;
            }
            if depth < MAX_DEPTH {
                queue.push_back((path, depth + 1));
            }
        }
    }
    Ok(found.map(|(_, p)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c7a0e9b2d3c5a6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
    const POD: &str = "0b5b6c39-3b7d-4c6e-9f8e-2d1a0c9b8e7f";

    fn ids(path: &str) -> Option<(String, Option<String>, Option<String>)> {
        from_cgroup_path(path).map(|c| (c.id, c.runtime, c.pod_uid))
    }

    #[test]
    fn kubernetes_systemd_layouts_give_the_id_and_the_pod_uid() {
        let pod = POD.replace('-', "_");
        for (runtime, scope) in [("containerd", "cri-containerd"), ("cri-o", "crio")] {
            let p = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/{scope}-{ID}.scope"
            );
            assert_eq!(
                ids(&p),
                Some((ID.into(), Some(runtime.into()), Some(POD.into()))),
                "{p}"
            );
        }
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod{pod}.slice/cri-containerd-{ID}.scope");
        assert_eq!(ids(&guaranteed).unwrap().2.as_deref(), Some(POD));
    }

    #[test]
    fn kubernetes_cgroupfs_layout() {
        let p = format!("/kubepods/besteffort/pod{POD}/{ID}");
        assert_eq!(ids(&p), Some((ID.into(), None, Some(POD.into()))));
    }

    #[test]
    fn docker_and_podman_layouts() {
        assert_eq!(
            ids(&format!("/system.slice/docker-{ID}.scope")),
            Some((ID.into(), Some("docker".into()), None))
        );
        assert_eq!(
            ids(&format!("/docker/{ID}")),
            Some((ID.into(), Some("docker".into()), None))
        );
        assert_eq!(
            ids(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            )),
            Some((ID.into(), Some("podman".into()), None))
        );
        assert_eq!(
            ids(&format!("/machine.slice/libpod-{ID}.scope"))
                .unwrap()
                .1
                .as_deref(),
            Some("podman")
        );
    }

    #[test]
    fn paths_without_a_container_and_near_misses_give_none() {
        for p in [
            "/",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/session-2.scope",
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
            &format!("/system.slice/docker-{}.scope", ID.to_ascii_uppercase()),
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            "/kubepods.slice/kubepods-podnot-a-uid.slice",
        ] {
            assert_eq!(ids(p), None, "{p}");
        }
        // A pod without a container below it is no container.
        assert_eq!(ids(&format!("/kubepods/pod{POD}")), None);
    }

    #[test]
    fn prefixes_find_one_container_or_say_which_two_match() {
        let root = std::env::temp_dir().join(format!("observer-container-{}", std::process::id()));
        let other = format!("4f1c{}", "0".repeat(60));
        let a = root
            .join("kubepods.slice/kubepods-podx.slice")
            .join(format!("cri-containerd-{ID}.scope"));
        let b = root
            .join("system.slice")
            .join(format!("docker-{other}.scope"));
        std::fs::create_dir_all(a.join("inner")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(find_below(&root, "4f1c7a").unwrap(), Some(a.clone()));
        assert_eq!(find_below(&root, ID).unwrap(), Some(a));
        assert_eq!(find_below(&root, "4f1c0").unwrap(), Some(b));
        assert!(matches!(
            find_below(&root, "4f1c"),
            Err(ContainerError::Ambiguous(..))
        ));
        assert_eq!(find_below(&root, "beef").unwrap(), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
