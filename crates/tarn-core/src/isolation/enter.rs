//! `tarn sandbox`: applies a [`SandboxPolicy`] to this process and executes the user's
//! program. It runs before any thread is started (a user namespace needs a single-threaded
//! process), and in this order: the identity's control group, namespaces and the view of the
//! file system, limits, the identity, Landlock, then `exec`. (The writable grants were given to
//! the identity once, by whoever made the policy: [`give`].) Any step that fails stops the
//! launch: never silently weaker than the policy says.

use super::SandboxPolicy;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// A failed step, named.
fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Applies `policy` and executes `program args…`; returns only on failure.
pub fn enter(
    policy: &SandboxPolicy,
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
) -> Result<Infallible, String> {
    // Into the identity's control group while still allowed to write its files.
    let pid = std::process::id().to_string();
    for procs in &policy.cgroup_procs {
        step(&format!("joining {procs}"), std::fs::write(procs, &pid))?;
    }
    if policy.namespaces {
        enter_namespaces(policy.uid.is_some())?;
        build_view(policy)?;
    }
    apply_limits(policy)?;
    if let Some(uid) = policy.uid {
        step("dropping supplementary groups", nix::unistd::setgroups(&[]))?;
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
        step("setting the gid", nix::unistd::setresgid(g, g, g))?;
        step("setting the uid", nix::unistd::setresuid(u, u, u))?;
    }
    if policy.landlock {
        let writable: Vec<&str> = policy
            .write
            .iter()
            .map(String::as_str)
            .chain(["/dev", "/tmp"])
            .collect();
        let status = step("landlock", landlock_restrict(&writable, true))?;
        if status == landlock::RulesetStatus::NotEnforced {
            return Err("landlock: not enforced by this kernel".into());
        }
    }
    step(
        &format!("entering {}", policy.cwd),
        nix::unistd::chdir(policy.cwd.as_str()),
    )?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let err = std::process::Command::new(program).args(args).exec();
    Err(format!("starting {}: {err}", program.to_string_lossy()))
}

/// A private mount namespace; when not root, inside a user namespace that maps only our own
/// uid and gid (so nothing gains privileges outside it).
fn enter_namespaces(root: bool) -> Result<(), String> {
    if root {
        step("unshare(mount)", unshare(CloneFlags::CLONE_NEWNS))?;
    } else {
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        step(
            "unshare(user, mount)",
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS),
        )?;
        step(
            "setgroups deny",
            std::fs::write("/proc/self/setgroups", "deny"),
        )?;
        step(
            "uid map",
            std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")),
        )?;
        step(
            "gid map",
            std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")),
        )?;
    }
    // Nothing mounted here propagates back to the host.
    step(
        "making mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )
}

/// An `O_PATH` handle: a bind source that stays reachable after its folder is covered.
fn handle(path: &Path) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    step(
        &format!("opening {}", path.display()),
        nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    )
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_tmpfs(at: &Path) -> Result<(), String> {
    step(
        &format!("covering {}", at.display()),
        mount(
            Some("tarn"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=16m"),
        ),
    )
}

/// Makes an empty mount point for `source` at `target` (a folder or a file) and binds it.
fn bind(source: &OwnedFd, target: &Path, is_dir: bool, read_only: bool) -> Result<(), String> {
    if is_dir {
        step(
            &format!("making {}", target.display()),
            std::fs::create_dir_all(target),
        )?;
    } else {
        if let Some(parent) = target.parent() {
            step(
                &format!("making {}", parent.display()),
                std::fs::create_dir_all(parent),
            )?;
        }
        if !target.exists() {
            step(
                &format!("making {}", target.display()),
                std::fs::File::create(target),
            )?;
        }
    }
    step(
        &format!("showing {}", target.display()),
        mount(
            Some(fd_path(source).as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
    )?;
    if read_only {
        // A remount keeps the flags the host's mount has (a user namespace may not drop them).
        let locked = nix::sys::statvfs::statvfs(target)
            .map(|s| s.flags())
            .unwrap_or(nix::sys::statvfs::FsFlags::empty());
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        use nix::sys::statvfs::FsFlags;
        for (has, flag) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if locked.contains(has) {
                flags |= flag;
            }
        }
        step(
            &format!("making {} read-only", target.display()),
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
        )?;
    }
    Ok(())
}

/// The file system as the process sees it: the hidden folder replaced by its grants, its
/// ancestors searchable, `/tmp` its own.
fn build_view(policy: &SandboxPolicy) -> Result<(), String> {
    // The folders made here only hold mount points up to a grant: searchable by the identity,
    // whatever mask the launcher came with (a Slurm job's script runs under `umask 077`).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let hidden = policy.hidden.as_deref().map(PathBuf::from);
    // Open every source first: covering a folder hides what is below it.
    let mut grants: Vec<(PathBuf, OwnedFd, bool, bool)> = vec![];
    for (paths, read_only) in [(&policy.write, false), (&policy.read, true)] {
        for p in paths {
            let path = PathBuf::from(p);
            let meta = step(&format!("granting {p}"), std::fs::metadata(&path))?;
            grants.push((path.clone(), handle(&path)?, meta.is_dir(), read_only));
        }
    }
    let tmp = match &policy.tmp {
        Some(t) => Some(handle(Path::new(t))?),
        None => None,
    };
    if policy.uid.is_some() {
        // Every granted path must be reachable by the identity: open up the ancestors
        // others may not search (a home under /root, an interpreter under /root/.pyenv).
        let mut reach: Vec<&Path> = grants.iter().map(|(p, ..)| p.as_path()).collect();
        reach.extend(hidden.as_deref());
        open_up_ancestors(&reach, hidden.as_deref())?;
    }
    // `/tmp` first: the hidden folder may be inside it (then it is remade in the new one).
    let mut covered: Vec<PathBuf> = vec![];
    if let Some(tmp) = &tmp {
        bind(tmp, Path::new("/tmp"), true, false)?;
        covered.push(PathBuf::from("/tmp"));
    }
    if let Some(hidden) = &hidden {
        step(
            &format!("making {}", hidden.display()),
            std::fs::create_dir_all(hidden),
        )?;
        mount_tmpfs(hidden)?;
        covered.push(hidden.clone());
    }
    if let (Some(uid), Some(tmp)) = (policy.uid, &policy.tmp) {
        name_the_identity(uid, &Path::new(tmp).join(".tarn-etc"))?;
    }
    // Parents before children, so a grant inside another is bound on top of it.
    grants.sort_by_key(|(p, ..)| p.components().count());
    for (path, fd, is_dir, read_only) in &grants {
        if covered.iter().any(|c| path.starts_with(c)) {
            bind(fd, path, *is_dir, *read_only)?;
        } else if *read_only && policy.uid.is_none() && !policy.landlock {
            // Elsewhere the host's own permissions hold; with neither an identity of its
            // own nor Landlock the process could write there: read-only.
            bind(fd, path, *is_dir, true)?;
        }
    }
    Ok(())
}

/// Gives the identity a name: `/etc/passwd` and `/etc/group` as the host has them, plus an
/// entry for `uid` (`tarn-job`, its home the process's `HOME`), as systemd does for its
/// dynamic users. Programs that look up the user running them (Java and Hadoop in a Spark
/// driver, `getpass`, `ssh`) fail without one. The copies are written (root's, read-only to
/// the identity) into `dir`, in the process's own temporary folder, which goes with it.
fn name_the_identity(uid: u32, dir: &Path) -> Result<(), String> {
    step(
        &format!("making {}", dir.display()),
        std::fs::create_dir_all(dir),
    )?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    for (file, line) in [
        (
            "/etc/passwd",
            format!("tarn-job:x:{uid}:{uid}:Tarn job:{home}:/bin/sh\n"),
        ),
        ("/etc/group", format!("tarn-job:x:{uid}:\n")),
    ] {
        let mut text = std::fs::read_to_string(file).unwrap_or_default();
        let known = text
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid.to_string().as_str()));
        if known {
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        // One copy per process: the ranks of a job share the temporary folder.
        let copy = dir.join(format!(
            "{}.{}",
            Path::new(file)
                .file_name()
                .expect("a file name")
                .to_string_lossy(),
            std::process::id()
        ));
        step(
            &format!("writing {}", copy.display()),
            std::fs::write(&copy, text.as_bytes()),
        )?;
        bind(&handle(&copy)?, Path::new(file), false, true)?;
    }
    Ok(())
}

/// For each ancestor of `paths` that other users may not search (e.g. `/root`, mode 0700),
/// outside the `hidden` folder (which gets a view of its own): a searchable folder in its
/// place holding its entries as they are (each bound back, so their own permissions hold), so
/// a path below it can be reached.
fn open_up_ancestors(paths: &[&Path], hidden: Option<&Path>) -> Result<(), String> {
    let mut dirs: Vec<&Path> = paths
        .iter()
        .flat_map(|p| p.ancestors().skip(1))
        .filter(|a| hidden.is_none_or(|h| !a.starts_with(h)))
        .collect();
    // Outer folders first: an inner one is opened up inside its parent's new view.
    dirs.sort_by(|a, b| (a.components().count(), *a).cmp(&(b.components().count(), *b)));
    dirs.dedup();
    for dir in dirs {
        let meta = step(
            &format!("reading {}", dir.display()),
            std::fs::metadata(dir),
        )?;
        if meta.mode() & 0o001 != 0 {
            continue;
        }
        let mut entries = vec![];
        for e in step(
            &format!("listing {}", dir.display()),
            std::fs::read_dir(dir),
        )? {
            let e = step("listing", e)?;
            let path = e.path();
            let ty = step("listing", e.file_type())?;
            if ty.is_symlink() {
                let target = step("reading a link", std::fs::read_link(&path))?;
                entries.push((path, None, false, Some(target)));
            } else {
                use nix::fcntl::OFlag;
                let fd = step(
                    &format!("opening {}", path.display()),
                    nix::fcntl::open(
                        &path,
                        OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                        nix::sys::stat::Mode::empty(),
                    ),
                )?;
                entries.push((path, Some(fd), ty.is_dir(), None));
            }
        }
        mount_tmpfs(dir)?;
        for (path, fd, is_dir, link) in entries {
            match (fd, link) {
                (Some(fd), _) => bind(&fd, &path, is_dir, false)?,
                (None, Some(target)) => step(
                    &format!("linking {}", path.display()),
                    std::os::unix::fs::symlink(target, &path),
                )?,
                (None, None) => {}
            }
        }
    }
    Ok(())
}

/// Gives the policy's writable grants to its identity, once for every process that runs
/// under the policy (a job's ranks, an instance's setup scripts and JupyterLab).
pub fn give(policy: &SandboxPolicy) -> std::io::Result<()> {
    let Some(uid) = policy.uid else {
        return Ok(());
    };
    for path in &policy.write {
        chown_tree(Path::new(path), uid).map_err(|e| {
            std::io::Error::new(e.kind(), format!("giving {path} to uid {uid}: {e}"))
        })?;
    }
    Ok(())
}

/// Gives a folder (and what is in it, links not followed) to `uid`; what it already owns is
/// left alone, so a folder that stays with its identity costs one look per entry.
fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

fn apply_limits(policy: &SandboxPolicy) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    // A core dump would hold the process's memory, tokens included.
    step("no core dumps", setrlimit(Resource::RLIMIT_CORE, 0, 0))?;
    if let Some(n) = policy.max_processes {
        step("the process limit", setrlimit(Resource::RLIMIT_NPROC, n, n))?;
    }
    // The server and the runners keep the CPU when user code wants all of it.
    step(
        "the CPU priority",
        rustix::process::setpriority_process(None, USER_CODE_NICE),
    )?;
    // When memory runs out, the kernel kills user code before the server or a runner.
    step(
        "the out-of-memory score",
        std::fs::write("/proc/self/oom_score_adj", USER_CODE_OOM_SCORE_ADJ),
    )?;
    Ok(())
}

/// What `/proc/self/oom_score_adj` says for user code (the server keeps 0): the out-of-memory
/// killer picks it first. Raising one's own score needs no privilege.
const USER_CODE_OOM_SCORE_ADJ: &str = "500";

/// Nice value of user code: below the server's, so it stays responsive under load.
const USER_CODE_NICE: i32 = 5;

/// Landlock: read and execute everywhere, write only under `writable`; with `scoped`, no
/// signals to and no abstract sockets of processes outside. Ptrace of processes outside the
/// sandbox is denied by Landlock itself.
fn landlock_restrict(
    writable: &[&str],
    scoped: bool,
) -> Result<landlock::RulesetStatus, landlock::RulesetError> {
    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
        Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?;
    if scoped {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(writable, AccessFs::from_all(abi)))?
        .restrict_self()?;
    Ok(status.ruleset)
}

/// `tarn sandbox --probe`: tries each mechanism in this (throw-away) process and prints
/// `key=yes|no` lines for [`super::Isolation::parse_probe`].
pub fn probe_here() -> String {
    let mut out = String::new();
    let mut missing = vec![];
    let root = Uid::effective().is_root();
    let namespaces = match enter_namespaces(root).and_then(|()| {
        let dir = std::env::temp_dir().join(format!("tarn-probe-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let r = mount_tmpfs(&dir);
        let _ = nix::mount::umount(&dir);
        let _ = std::fs::remove_dir(&dir);
        r
    }) {
        Ok(()) => true,
        Err(e) => {
            missing.push(format!("no mount namespace ({e})"));
            false
        }
    };
    let identities = if root {
        let probe = Uid::from_raw(super::UID_FIRST + super::UID_COUNT - 1);
        match nix::unistd::setgroups(&[])
            .and_then(|()| {
                nix::unistd::setresgid(
                    Gid::from_raw(probe.as_raw()),
                    Gid::from_raw(probe.as_raw()),
                    Gid::from_raw(probe.as_raw()),
                )
            })
            .and_then(|()| nix::unistd::setresuid(probe, probe, probe))
        {
            Ok(()) => true,
            Err(e) => {
                missing.push(format!("cannot switch to an unprivileged uid ({e})"));
                false
            }
        }
    } else {
        missing.push("the server does not run as root, so user code shares its uid".into());
        false
    };
    use landlock::RulesetStatus;
    let (landlock, scoped) = match landlock_restrict(&["/tmp"], true) {
        Ok(RulesetStatus::FullyEnforced) => (true, true),
        Ok(RulesetStatus::PartiallyEnforced) => (true, false),
        Ok(RulesetStatus::NotEnforced) => {
            missing.push("no Landlock in this kernel".into());
            (false, false)
        }
        Err(e) => {
            missing.push(format!("no Landlock ({e})"));
            (false, false)
        }
    };
    if landlock && !scoped {
        missing.push("Landlock cannot scope signals here (kernel before 6.12)".into());
    }
    for (k, v) in [
        ("identities", identities),
        ("namespaces", namespaces),
        ("landlock", landlock),
        ("scoped", scoped),
    ] {
        out.push_str(&format!("{k}={}\n", if v { "yes" } else { "no" }));
    }
    for m in missing {
        out.push_str(&format!("missing={m}\n"));
    }
    out.push_str("done=yes\n");
    out
}
