//! The fuzz's privilege checks: `rmmod` under load is refused, and an
//! unprivileged user can do nothing it may not.

use super::*;

/// `delete_module("fanout")` while topic files are open must be refused,
/// and the module must stay.
pub(crate) fn rmmod_refused() -> Result<()> {
    let name = CString::new("fanout")?;
    // SAFETY: delete_module with a valid NUL-terminated name.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    let e = io::Error::last_os_error();
    ensure!(
        rc != 0,
        "rmmod fanout succeeded while topic files were open"
    );
    ensure!(
        matches!(errno(&e), libc::EBUSY | libc::EAGAIN),
        "rmmod fanout under load: {e}, want EBUSY or EAGAIN"
    );
    ensure!(
        Path::new("/sys/module/fanout").exists() && control::control_path().exists(),
        "the module or its control device is gone after a refused rmmod"
    );
    // busybox rmmod too, as a user would.
    if let Ok(out) = std::process::Command::new("rmmod").arg("fanout").output() {
        ensure!(!out.status.success(), "`rmmod fanout` succeeded under load");
    }
    ensure!(
        Path::new("/sys/module/fanout").exists(),
        "the module is gone"
    );
    Ok(())
}

// ------------------------------------------------------ unprivileged ----

/// What an unprivileged process may not do, tried from a child that drops
/// to uid/gid 65534 with no groups, with files root opened for it.
pub(crate) fn unprivileged() -> Result<()> {
    const NOBODY: u32 = 65534;
    let priv_path = fresh_topic("fuzz/priv", 16384, false)?;
    let ctl = control::control_path();
    let ctl_rw = OpenOptions::new().read(true).write(true).open(&ctl)?;
    let ctl_ro = File::open(&ctl)?;
    let t_ro = open_nb(&priv_path, true, false)?;
    let t_wo = open_nb(&priv_path, false, true)?;
    let before = topic_names();
    let static_records = sysfs_u64("fanout1", "records").ok();
    let spec = |name: &str, uid: u32, gid: u32| abi::TopicSpec {
        name: abi::TopicName::new(name.as_bytes()).unwrap_or(abi::TopicName { bytes: [0; 72] }),
        ring_size: 16384,
        record_max: 0,
        mode: 0o666,
        uid,
        gid,
        flags: 0,
        stall_ms: 0,
    };
    let mut specs = [
        spec("fuzz/nobody", 0, 0),
        spec("fuzz/nobody", NOBODY, 0),
        spec("fuzz/nobody", NOBODY, NOBODY),
    ];
    let mut names = [
        abi::TopicName::new(b"fuzz/priv").unwrap_or(abi::TopicName { bytes: [0; 72] }),
        abi::TopicName::new(b"fanout1").unwrap_or(abi::TopicName { bytes: [0; 72] }),
    ];
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let paths = [
        c(&ctl.to_string_lossy()),
        c(&priv_path.to_string_lossy()),
        c("/dev/fanout1"),
        c("/sys/class/baf/fanout1/lost"),
        c("fanout"),
    ];
    let lossless: u32 = abi::FLAG_LOSSLESS;
    let one: u32 = 1;
    let (ctl_rw, ctl_ro, t_ro, t_wo) = (
        ctl_rw.as_raw_fd(),
        ctl_ro.as_raw_fd(),
        t_ro.as_raw_fd(),
        t_wo.as_raw_fd(),
    );
    // (what, allowed errnos)
    let attempts: [(&str, &[i32]); 20] = [
        ("open /dev/baf-control O_RDWR", &[libc::EACCES]),
        ("open /dev/baf-control O_RDONLY", &[libc::EACCES]),
        ("open fuzz/priv O_RDONLY", &[libc::EACCES]),
        ("open fuzz/priv O_WRONLY", &[libc::EACCES]),
        ("open /dev/fanout1 O_RDWR", &[libc::EACCES]),
        ("open a sysfs statistic for writing", &[libc::EACCES]),
        (
            "IOC_CREATE owned by root (inherited control file)",
            &[libc::EPERM],
        ),
        ("IOC_CREATE with group 0 (not its own)", &[libc::EPERM]),
        ("IOC_REMOVE of root's topic", &[libc::EPERM]),
        ("IOC_REMOVE of a static topic", &[libc::EPERM]),
        ("IOC_CREATE on a read-only control file", &[libc::EBADF]),
        ("IOC_REMOVE on a read-only control file", &[libc::EBADF]),
        (
            "IOC_CLAIM_PUBLISHER on a read-only topic file",
            &[libc::EBADF],
        ),
        ("write() on a read-only topic file", &[libc::EBADF]),
        (
            "FLAG_LOSSLESS on a topic without TOPIC_LOSSLESS",
            &[libc::EPERM],
        ),
        (
            "IOC_WAIT_READERS 1 on a topic without TOPIC_LOSSLESS",
            &[libc::EPERM],
        ),
        ("mmap of a write-only topic file", &[libc::EACCES]),
        (
            "mmap PROT_WRITE of a read-only topic file",
            &[libc::EACCES, libc::EPERM],
        ),
        ("delete_module(fanout)", &[libc::EPERM]),
        ("finish: uid and gid are 65534", &[]),
    ];
    let mut pipe = [0i32; 2];
    // SAFETY: a fresh pipe.
    ensure!(unsafe { libc::pipe(pipe.as_mut_ptr()) } == 0, "pipe");
    // SAFETY: the child makes raw system calls only (no allocation, no
    // locks), writes its results to the pipe and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw system calls on values prepared before the fork.
        unsafe {
            let mut res = [[0i32; 2]; 20];
            let dropped = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY) == 0
                && libc::setuid(NOBODY) == 0;
            let r = |rc: i64| -> [i32; 2] {
                if rc < 0 {
                    [-1, *libc::__errno_location()]
                } else {
                    [rc.min(i64::from(i32::MAX)) as i32, 0]
                }
            };
            if dropped {
                res[0] = r(libc::open(paths[0].as_ptr(), libc::O_RDWR) as i64);
                res[1] = r(libc::open(paths[0].as_ptr(), libc::O_RDONLY) as i64);
                res[2] = r(libc::open(paths[1].as_ptr(), libc::O_RDONLY) as i64);
                res[3] = r(libc::open(paths[1].as_ptr(), libc::O_WRONLY) as i64);
                res[4] = r(libc::open(paths[2].as_ptr(), libc::O_RDWR) as i64);
                res[5] = r(libc::open(paths[3].as_ptr(), libc::O_WRONLY) as i64);
                res[6] = r(libc::ioctl(ctl_rw, abi::IOC_CREATE as _, &mut specs[0]) as i64);
                res[7] = r(libc::ioctl(ctl_rw, abi::IOC_CREATE as _, &mut specs[1]) as i64);
                res[8] = r(libc::ioctl(ctl_rw, abi::IOC_REMOVE as _, &mut names[0]) as i64);
                res[9] = r(libc::ioctl(ctl_rw, abi::IOC_REMOVE as _, &mut names[1]) as i64);
                res[10] = r(libc::ioctl(ctl_ro, abi::IOC_CREATE as _, &mut specs[2]) as i64);
                res[11] = r(libc::ioctl(ctl_ro, abi::IOC_REMOVE as _, &mut names[0]) as i64);
                res[12] = r(libc::ioctl(t_ro, abi::IOC_CLAIM_PUBLISHER as _, 0) as i64);
                res[13] = r(libc::write(t_ro, b"x".as_ptr().cast(), 1) as i64);
                res[14] = r(libc::ioctl(t_ro, abi::IOC_SET_FLAGS as _, &lossless) as i64);
                res[15] = r(libc::ioctl(t_ro, abi::IOC_WAIT_READERS as _, &one) as i64);
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    t_wo,
                    0,
                );
                res[16] = if m == libc::MAP_FAILED { r(-1) } else { [0, 0] };
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    t_ro,
                    0,
                );
                res[17] = if m == libc::MAP_FAILED { r(-1) } else { [0, 0] };
                res[18] = r(libc::syscall(
                    libc::SYS_delete_module,
                    paths[4].as_ptr(),
                    libc::O_NONBLOCK,
                ));
                res[19] = if libc::getuid() == NOBODY
                    && libc::geteuid() == NOBODY
                    && libc::getgid() == NOBODY
                {
                    [0, 0]
                } else {
                    [-1, 0]
                };
            } else {
                res[19] = [-1, *libc::__errno_location()];
            }
            libc::write(pipe[1], res.as_ptr().cast(), size_of_val(&res));
            libc::_exit(0);
        }
    }
    ensure!(child > 0, "fork: {}", io::Error::last_os_error());
    // SAFETY: our end of the pipe is closed once.
    unsafe { libc::close(pipe[1]) };
    let mut res = [[0i32; 2]; 20];
    // SAFETY: reading into a buffer of exactly this size.
    let n = unsafe { libc::read(pipe[0], res.as_mut_ptr().cast(), size_of_val(&res)) };
    let mut status = 0;
    // SAFETY: reaping our own child; closing our pipe end.
    unsafe {
        libc::waitpid(child, &mut status, 0);
        libc::close(pipe[0]);
    }
    ensure!(
        n as usize == size_of_val(&res),
        "the child reported {n} bytes (status {status:#x})"
    );
    let mut errors = Vec::new();
    for (i, (what, allowed)) in attempts.iter().enumerate() {
        let [rc, e] = res[i];
        let fine = if allowed.is_empty() {
            rc == 0
        } else {
            rc == -1 && allowed.contains(&e)
        };
        if !fine {
            errors.push(format!(
                "{what}: {}",
                if rc >= 0 && !allowed.is_empty() {
                    format!("succeeded (rc {rc})")
                } else if allowed.is_empty() {
                    format!("no ({})", ename(e))
                } else {
                    format!(
                        "{}, want {}",
                        ename(e),
                        allowed
                            .iter()
                            .map(|&a| ename(a))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )
                }
            ));
        }
    }
    // Nothing changed.
    let after = topic_names();
    if after != before {
        errors.push(format!("the topics changed: {before:?} -> {after:?}"));
    }
    if static_records != sysfs_u64("fanout1", "records").ok() {
        errors.push("fanout1 got records".into());
    }
    let meta = std::fs::metadata(&ctl)?;
    use std::os::unix::fs::MetadataExt;
    if meta.mode() & 0o7777 != 0o660 || meta.uid() != 0 {
        errors.push(format!(
            "the control node is now mode {:o} uid {}",
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    control::remove("fuzz/priv")?;
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}
