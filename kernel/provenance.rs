// SPDX-License-Identifier: GPL-2.0
//! Who wrote a record and when: stamped by the kernel at `write()`, shown to
//! each reader in the reader's own namespaces.
//!
//! The ring stores the writer's pid in the initial pid namespace, its raw
//! kuid and its identity (the pidfs inode number of its thread group's
//! `struct pid`, which unlike the pid is never reused before reboot);
//! [`Viewer`] translates pid and uid for the reading task. A writer has no
//! way to set any of it.

use crate::ring::Stamp;
use kernel::{
    bindings, current,
    sync::rcu,
    task::{Kuid, Task},
};

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions in process context.
    let t = unsafe { bindings::ktime_get() };
    u64::try_from(t).unwrap_or(0)
}

/// The pidfs inode number of `pid`: what `fstat()` of a pidfd for that
/// process gives as `st_ino`.
///
/// # Safety
///
/// `pid` is a valid `struct pid` (a reference is held, or the RCU read lock
/// under which it was found).
unsafe fn pid_ino(pid: *const bindings::pid) -> u64 {
    // SAFETY: `pid` is valid (the caller's contract). `ino` is set once when
    // the pid is allocated, before it is visible to anyone, and never
    // changes while the pid lives.
    unsafe { (*pid).__bindgen_anon_1.ino }
}

/// The current process's id in the initial pid namespace and its identity
/// (the pidfs inode number of its thread group's pid); `(0, 0)` if it has
/// no pid.
///
/// Both come from one lookup of the thread group's `struct pid`, the same
/// one `task_tgid_nr_ns(current, &init_pid_ns)` reads, rather than from
/// `task_struct` fields: on our KASAN test kernel `Task::tgid()` read a
/// wrong offset (found by the record-header tests), while `struct pid` is
/// read as the C helpers read it.
fn writer() -> (u32, u64) {
    // SAFETY: `current_raw` is the live current task; `get_task_pid` takes a
    // reference on its thread-group pid (or returns null).
    let pid =
        unsafe { bindings::get_task_pid(Task::current_raw(), bindings::pid_type_PIDTYPE_TGID) };
    if pid.is_null() {
        return (0, 0);
    }
    // SAFETY: We hold the reference `get_task_pid` took. `numbers` has
    // `level + 1` entries, so entry 0 (the initial namespace, what
    // `pid_nr()` reads) always exists; numbers never change while the pid
    // lives.
    let nr = unsafe { (*(*pid).numbers.as_ptr()).nr };
    // SAFETY: As above.
    let ino = unsafe { pid_ino(pid) };
    // SAFETY: Drops that reference; `pid` is not used again.
    unsafe { bindings::put_pid(pid) };
    (u32::try_from(nr).unwrap_or(0), ino)
}

/// The stamp for a record written now by the current task.
pub(crate) fn stamp() -> Stamp {
    let (pid, writer) = writer();
    Stamp {
        timestamp_ns: monotonic_ns(),
        pid,
        uid: Kuid::current_euid().into_raw().val,
        writer,
    }
}

/// Whether the current task is in the initial pid and user namespaces,
/// where global pids and kuids are what it would see anyway.
pub(crate) fn in_initial_namespaces() -> bool {
    let init_pid = &raw mut bindings::init_pid_ns;
    let init_user = &raw mut bindings::init_user_ns;
    // SAFETY: `current_raw` is the live current task; the helper only reads
    // its pid namespace pointer.
    let pid_ns = unsafe { bindings::task_active_pid_ns(Task::current_raw()) };
    // SAFETY: Reads the current task's own credentials.
    let user_ns = unsafe { bindings::current_user_ns() };
    pid_ns == init_pid && user_ns == init_user
}

/// The reading task's view of pids and uids. Lives only for one system call
/// of the current task (it is neither `Send` nor `Sync`).
pub(crate) struct Viewer {
    ns: *mut bindings::pid_namespace,
}

impl Viewer {
    /// The current task's view.
    pub(crate) fn current() -> Self {
        let ns = current!()
            .active_pid_ns()
            .map_or(core::ptr::null_mut(), |ns| ns.as_ptr());
        Self { ns }
    }

    /// `global` (a pid in the initial namespace) of the process `writer`
    /// as the viewer sees it; 0 if that process is not visible from the
    /// viewer's namespace or, when the viewer is in a child namespace, has
    /// exited (its pid is free, or reused by a process that is not
    /// `writer`).
    pub(crate) fn pid(&self, global: u32, writer: u64) -> u32 {
        let init = &raw mut bindings::init_pid_ns;
        if self.ns == init {
            // The initial namespace sees global pids as they are, even of a
            // writer that has exited since.
            return global;
        }
        if self.ns.is_null() {
            return 0;
        }
        let Ok(nr) = i32::try_from(global) else {
            return 0;
        };
        let _rcu = rcu::read_lock();
        // SAFETY: `find_pid_ns` requires the RCU read lock, held by `_rcu`;
        // `init` is the static initial namespace.
        let pid = unsafe { bindings::find_pid_ns(nr, init) };
        if pid.is_null() {
            return 0;
        }
        // SAFETY: `pid` was found under the RCU read lock still held.
        if writer != 0 && unsafe { pid_ino(pid) } != writer {
            // The writer exited and its pid now names another process.
            return 0;
        }
        // SAFETY: `pid` was found under the RCU read lock still held, so it
        // stays valid; `self.ns` is the current task's active namespace, valid
        // for the whole system call this `Viewer` lives in.
        let local = unsafe { bindings::pid_nr_ns(pid, self.ns) };
        u32::try_from(local).unwrap_or(0)
    }

    /// `kuid` as the current task's user namespace sees it (the overflow uid
    /// when it is not mapped there).
    pub(crate) fn uid(&self, kuid: u32) -> u32 {
        let kuid = bindings::kuid_t { val: kuid };
        // SAFETY: `from_kuid_munged` only reads the namespace, which is the
        // current task's own and so stays valid during this call.
        unsafe { bindings::from_kuid_munged(bindings::current_user_ns(), kuid) }
    }
}
