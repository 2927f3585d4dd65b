//! Memory, CPU and process limits per identity (a job's node, a replica, an instance) through
//! the kernel's control groups, so that one piece of user code cannot starve the machine or the
//! server. Only a server running as root sets them up (the identities need root anyway).
//!
//! Two layouts, found once when the server starts ([`Layout::set_up`]) and handed to the
//! processes it starts (the [`ENV`] variable):
//! - **cgroup v2** (the unified hierarchy with the `memory`, `cpu` and `pids` controllers):
//!   the groups live under `tarn-jobs` next to the server's own group. A non-root group with
//!   processes may not hand controllers to children, so the server first moves itself into a
//!   leaf, `tarn-server` (as container runtimes and systemd's `Delegate=` services do).
//! - **cgroup v1** (one hierarchy per controller, as on hosts that still mount them): the groups
//!   live under `tarn` inside the server's own group of each controller's hierarchy.
//!
//! Each identity gets a group named after its uid, made when the identity is limited and
//! removed (with whatever still runs in it killed) when the identity is dropped.

use std::path::{Path, PathBuf};

/// The environment variable carrying the layout from the server to runners, replicas and
/// instances.
pub const ENV: &str = "TARN_CGROUPS";

/// What one identity may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Memory (resident and page cache) in bytes; past it the kernel's out-of-memory killer
    /// stops a process of the group, not of the server.
    pub memory_bytes: u64,
    /// CPUs' worth of time per period (1.5 = one and a half CPUs).
    pub cpus: f64,
    /// Processes and threads at once.
    pub pids: u64,
}

/// Where the groups are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The parent of the groups in the unified hierarchy.
    V2(PathBuf),
    /// The parents of the groups in the memory, cpu and pids hierarchies.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
    },
}

impl Layout {
    /// What `tarn server status` shows.
    pub fn describe(&self) -> &'static str {
        match self {
            Layout::V2(_) => "cgroup v2 limits (memory, CPU, processes)",
            Layout::V1 { .. } => "cgroup v1 limits (memory, CPU, processes)",
        }
    }

    /// The value of [`ENV`].
    pub fn to_env(&self) -> String {
        match self {
            Layout::V2(p) => format!("v2:{}", p.display()),
            Layout::V1 { memory, cpu, pids } => format!(
                "v1:{}:{}:{}",
                memory.display(),
                cpu.display(),
                pids.display()
            ),
        }
    }

    pub fn from_env_value(value: &str) -> Option<Layout> {
        let mut parts = value.split(':');
        let layout = match parts.next()? {
            "v2" => Layout::V2(parts.next()?.into()),
            "v1" => Layout::V1 {
                memory: parts.next()?.into(),
                cpu: parts.next()?.into(),
                pids: parts.next()?.into(),
            },
            _ => return None,
        };
        parts.next().is_none().then_some(layout)
    }

    /// The layout the server handed down, if any.
    pub fn from_env() -> Option<Layout> {
        Layout::from_env_value(&std::env::var(ENV).ok()?)
    }

    /// Finds where groups can be made on this host and makes their parent(s), with a probe
    /// group made and removed to be sure; the reason when none can.
    pub fn set_up() -> Result<Layout, String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading the mounts: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading this process's groups: {e}"))?;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let layout = match find(&mounts, &own, read)? {
            Found::V2 { mount, own } => set_up_v2(&mount, &own)?,
            Found::V1 { memory, cpu, pids } => {
                let parents = [memory, cpu, pids].map(|p| p.join("tarn"));
                for p in &parents {
                    std::fs::create_dir_all(p)
                        .map_err(|e| format!("making {}: {e}", p.display()))?;
                }
                let [memory, cpu, pids] = parents;
                Layout::V1 { memory, cpu, pids }
            }
        };
        let probe = Limits {
            memory_bytes: 64 << 20,
            cpus: 1.0,
            pids: 16,
        };
        let group = layout
            .make(&format!("probe-{}", std::process::id()), &probe)
            .map_err(|e| format!("making a group: {e}"))?;
        group.remove();
        Ok(layout)
    }

    /// Makes (or remakes) the group `name` with `limits`.
    pub fn make(&self, name: &str, limits: &Limits) -> std::io::Result<Group> {
        let dirs: Vec<PathBuf> = match self {
            Layout::V2(parent) => vec![parent.join(name)],
            Layout::V1 { memory, cpu, pids } => {
                vec![memory.join(name), cpu.join(name), pids.join(name)]
            }
        };
        let group = Group {
            dirs,
            v2: matches!(self, Layout::V2(_)),
        };
        // A group left by a holder that died: emptied and made anew, so its counters start at 0.
        group.clone().remove();
        for d in &group.dirs {
            std::fs::create_dir(d).map_err(|e| with_path(e, d))?;
        }
        let period: u64 = 100_000;
        let quota = ((limits.cpus * period as f64) as u64).max(1000);
        let writes: Vec<(PathBuf, String)> = match self {
            Layout::V2(_) => {
                let d = &group.dirs[0];
                vec![
                    (d.join("memory.max"), limits.memory_bytes.to_string()),
                    (d.join("memory.swap.max"), "0".into()),
                    (d.join("cpu.max"), format!("{quota} {period}")),
                    (d.join("pids.max"), limits.pids.to_string()),
                ]
            }
            Layout::V1 { .. } => {
                let (m, c, p) = (&group.dirs[0], &group.dirs[1], &group.dirs[2]);
                vec![
                    (
                        m.join("memory.limit_in_bytes"),
                        limits.memory_bytes.to_string(),
                    ),
                    (
                        m.join("memory.memsw.limit_in_bytes"),
                        limits.memory_bytes.to_string(),
                    ),
                    (c.join("cpu.cfs_period_us"), period.to_string()),
                    (c.join("cpu.cfs_quota_us"), quota.to_string()),
                    (p.join("pids.max"), limits.pids.to_string()),
                ]
            }
        };
        for (file, value) in writes {
            // Swap accounting is optional in both versions; the rest is required.
            let optional =
                file.ends_with("memory.swap.max") || file.ends_with("memory.memsw.limit_in_bytes");
            match std::fs::write(&file, &value) {
                Err(e) if !optional => {
                    group.clone().remove();
                    return Err(with_path(e, &file));
                }
                _ => {}
            }
        }
        Ok(group)
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The hierarchies this host mounts, and where this process sits in them.
#[derive(Debug, PartialEq)]
enum Found {
    V2 {
        mount: PathBuf,
        own: PathBuf,
    },
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
    },
}

/// Reads `/proc/self/mountinfo` and `/proc/self/cgroup` (their text; `read` reads a file of a
/// hierarchy): the unified hierarchy when it has the three controllers, else the v1 hierarchies
/// of each.
fn find(mountinfo: &str, own: &str, read: impl Fn(&Path) -> String) -> Result<Found, String> {
    // mountinfo: `id parent major:minor root mount-point options … - fstype source super-options`.
    let mut v2: Option<PathBuf> = None;
    let mut v1: Vec<(PathBuf, Vec<String>)> = vec![];
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), right.first())
        else {
            continue;
        };
        // A hierarchy mounted from inside (a bind of a sub-group) is not the whole of it.
        if *root != "/" {
            continue;
        }
        match *fstype {
            "cgroup2" => v2 = Some(PathBuf::from(point)),
            "cgroup" => {
                let opts = right.get(2).copied().unwrap_or("");
                v1.push((
                    PathBuf::from(point),
                    opts.split(',').map(str::to_string).collect(),
                ));
            }
            _ => {}
        }
    }
    let own_path = |hierarchy: &str| -> Option<PathBuf> {
        own.lines().find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            let matches = if hierarchy.is_empty() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == hierarchy)
            };
            matches.then(|| PathBuf::from(path.trim_start_matches('/')))
        })
    };
    if let Some(mount) = &v2 {
        let available = read(&mount.join("cgroup.controllers"));
        let has = |c: &str| available.split_whitespace().any(|a| a == c);
        if ["memory", "cpu", "pids"].iter().all(|c| has(c))
            && let Some(own) = own_path("")
        {
            return Ok(Found::V2 {
                mount: mount.clone(),
                own,
            });
        }
    }
    let v1_of = |controller: &str| -> Option<PathBuf> {
        let (mount, _) = v1
            .iter()
            .find(|(_, opts)| opts.iter().any(|o| o == controller))?;
        Some(mount.join(own_path(controller)?))
    };
    match (v1_of("memory"), v1_of("cpu"), v1_of("pids")) {
        (Some(memory), Some(cpu), Some(pids)) => Ok(Found::V1 { memory, cpu, pids }),
        _ => Err(match v2 {
            Some(_) => "the unified cgroup hierarchy lacks the memory, cpu or pids controller, and they are not mounted as cgroup v1 either".into(),
            None => "no cgroup hierarchy is mounted".into(),
        }),
    }
}

/// cgroup v2: the server moves into `<own>/tarn-server` and the groups go in `<own>/tarn-jobs`,
/// both with the controllers handed down (the root group may keep processes, so there the
/// server stays and only `tarn-jobs` is made).
fn set_up_v2(mount: &Path, own: &Path) -> Result<Layout, String> {
    let group = mount.join(own);
    let write = |file: &Path, value: &str| {
        std::fs::write(file, value)
            .map_err(|e| format!("writing {value:?} to {}: {e}", file.display()))
    };
    let make = |dir: &Path| {
        std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))
    };
    if !own.as_os_str().is_empty() {
        let server = group.join("tarn-server");
        make(&server)?;
        // Every process of the group moves: a group with processes keeps its controllers.
        let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            // One that ended meanwhile is fine.
            let _ = std::fs::write(server.join("cgroup.procs"), pid);
        }
    }
    let enable = "+memory +cpu +pids";
    write(&group.join("cgroup.subtree_control"), enable)?;
    let jobs = group.join("tarn-jobs");
    make(&jobs)?;
    write(&jobs.join("cgroup.subtree_control"), enable)?;
    Ok(Layout::V2(jobs))
}

/// One identity's group (a folder per hierarchy).
#[derive(Clone, Debug)]
pub struct Group {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Group {
    /// The files a process writes its pid to in order to join (before it drops root).
    pub fn procs_files(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect()
    }

    /// How many times the kernel killed a process of this group for its memory limit.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            (self.dirs[0].join("memory.events"), "oom_kill")
        } else {
            (self.dirs[0].join("memory.oom_control"), "oom_kill")
        };
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    }

    /// Kills whatever still runs in the group and removes it.
    pub fn remove(self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for _ in 0..100 {
            let mut left = false;
            for d in self.dirs.iter().filter(|d| d.exists()) {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    left = true;
                }
                if !left && std::fs::remove_dir(d).is_err() && d.exists() {
                    left = true;
                }
            }
            if !left {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_round_trips_through_the_environment_value() {
        for layout in [
            Layout::V2("/sys/fs/cgroup/system.slice/tarn.service/tarn-jobs".into()),
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/tarn".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct/tarn".into(),
                pids: "/sys/fs/cgroup/pids/tarn".into(),
            },
        ] {
            assert_eq!(Layout::from_env_value(&layout.to_env()), Some(layout));
        }
        assert_eq!(Layout::from_env_value("v3:/x"), None);
        assert_eq!(Layout::from_env_value("v1:/a:/b"), None);
    }

    /// A host that mounts the v1 hierarchies (and a unified one without those controllers):
    /// groups go inside this process's own group of each.
    #[test]
    fn v1_hierarchies_are_found_with_this_process_group_in_each() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 /inner /mnt/elsewhere rw - cgroup cgroup rw,pids
";
        let own = "\
8:pids:/
4:memory:/process_api/31fc
2:cpu,cpuacct:/
0::/
";
        let unified = |_: &Path| "hugetlb\n".to_string();
        assert_eq!(
            find(mountinfo, own, unified),
            Ok(Found::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/31fc".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            })
        );
        assert!(
            find("", own, unified)
                .unwrap_err()
                .contains("no cgroup hierarchy")
        );
    }

    /// A unified hierarchy with the controllers (systemd with `Delegate=yes`): this process's
    /// group in it.
    #[test]
    fn the_unified_hierarchy_is_found_when_it_has_the_controllers() {
        let mountinfo = "29 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let own = "0::/system.slice/tarn.service\n";
        let controllers = |p: &Path| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/cgroup.controllers"));
            "cpuset cpu io memory hugetlb pids rdma misc\n".to_string()
        };
        assert_eq!(
            find(mountinfo, own, controllers),
            Ok(Found::V2 {
                mount: "/sys/fs/cgroup".into(),
                own: "system.slice/tarn.service".into(),
            })
        );
        let without_memory = |_: &Path| "cpu pids\n".to_string();
        assert!(
            find(mountinfo, own, without_memory)
                .unwrap_err()
                .contains("lacks")
        );
    }
}
