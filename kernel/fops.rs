// SPDX-License-Identifier: GPL-2.0
//! The thin unsafe layer for file operations: the tables for topic nodes and
//! for the control node.
//!
//! The kernel crate's `MiscDevice` trait has no `poll`, so, like the Rust
//! Binder driver, we write the `file_operations` tables ourselves. Each entry
//! recovers its file's state and calls a safe method; the logic lives in
//! `file.rs` (topics) and `control.rs`.

use crate::chardev::minor_of;
use crate::file::OpenFile;
use crate::registry::TOPICS;
use kernel::{
    bindings,
    ffi::{c_int, c_long, c_uint, c_ulong},
    fs::File,
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    seq_file::SeqFile,
    types::ForeignOwnable,
};

type Private = Pin<KBox<OpenFile>>;

/// `IOCB_NOWAIT` (a C macro bindgen does not see): `RWF_NOWAIT`, set for
/// `preadv2(..., RWF_NOWAIT)` and io_uring.
const IOCB_NOWAIT: c_int = 0x8;

/// `FMODE_NOWAIT` (a C macro with a cast bindgen does not see): the file
/// supports `RWF_NOWAIT`. Our read and write honour it (`EAGAIN` instead of
/// waiting for data or for another writer), so we set it at open; without
/// it the VFS refuses `RWF_NOWAIT` with `EOPNOTSUPP`.
const FMODE_NOWAIT: u32 = 1 << 27;

/// A `file_operations` table in a `static`.
pub(crate) struct Fops(pub(crate) bindings::file_operations);
// SAFETY: The tables are never written after their constant initialization.
unsafe impl Sync for Fops {}

/// File operations of topic nodes.
pub(crate) static TOPIC_FOPS: Fops = Fops(bindings::file_operations {
    owner: crate::compat::this_module(),
    open: Some(fanout_open),
    release: Some(fanout_release),
    read_iter: Some(fanout_read_iter),
    write_iter: Some(fanout_write_iter),
    poll: Some(fanout_poll),
    // `splice` and `sendfile` (ABI 7) go through `read_iter`/`write_iter`
    // above: the kernel's generic helpers hand them a page iterator, which
    // the read and write paths copy from and to like any other iterator.
    splice_read: Some(bindings::copy_splice_read),
    splice_write: Some(bindings::iter_file_splice_write),
    mmap: Some(fanout_mmap),
    unlocked_ioctl: Some(fanout_ioctl),
    #[cfg(CONFIG_COMPAT)]
    compat_ioctl: bindings::compat_ptr_ioctl,
    show_fdinfo: Some(fanout_show_fdinfo),
    // SAFETY: All-zero is a valid `file_operations` (every entry optional).
    ..unsafe { core::mem::zeroed() }
});

/// File operations of the control node: only ioctls.
pub(crate) static CONTROL_FOPS: Fops = Fops(bindings::file_operations {
    owner: crate::compat::this_module(),
    open: Some(control_open),
    unlocked_ioctl: Some(control_ioctl),
    #[cfg(CONFIG_COMPAT)]
    compat_ioctl: bindings::compat_ptr_ioctl,
    // SAFETY: As above.
    ..unsafe { core::mem::zeroed() }
});

/// # Safety
/// Called by `chrdev_open` for a node of our topic minors.
unsafe extern "C" fn fanout_open(inode: *mut bindings::inode, raw: *mut bindings::file) -> c_int {
    // SAFETY: `inode` is the valid inode being opened.
    let minor = unsafe { minor_of(inode) };
    // A removed topic is gone from the registry before its node is: an open
    // that races with removal gets ENODEV, never a dying topic's pointer.
    let Some(topic) = TOPICS.lock().by_minor(minor) else {
        return ENODEV.to_errno();
    };
    // SAFETY: `inode` and `raw` are the valid inode and file being opened;
    // setting mode bits during open, before the file is installed, is what
    // the VFS expects of an `open` method.
    unsafe {
        bindings::stream_open(inode, raw);
        (*raw).f_mode |= FMODE_NOWAIT;
    }
    // SAFETY: `raw` is valid for the duration of this call and no fdget_pos
    // region is active on it.
    let file = unsafe { File::from_raw_file(raw) };
    let mode = file.flags() & kernel::fs::file::flags::O_ACCMODE;
    let can_read = mode != kernel::fs::file::flags::O_WRONLY;
    let can_write = mode != kernel::fs::file::flags::O_RDONLY;
    match OpenFile::open(topic, can_read, can_write) {
        Ok(of) => {
            // SAFETY: We own `private_data` of our files from now on; every
            // other entry point reads it back as `Private`.
            unsafe { (*raw).private_data = of.into_foreign() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Borrows the `OpenFile` of `raw`.
///
/// # Safety
/// `raw` is a file opened by `fanout_open` and not yet released.
unsafe fn open_file<'a>(raw: *mut bindings::file) -> Pin<&'a OpenFile> {
    // SAFETY: `fanout_open` stored a `Private` in `private_data`, reclaimed
    // only in `fanout_release`, which cannot run during another file
    // operation on the same file.
    unsafe { <Private as ForeignOwnable>::borrow((*raw).private_data) }
}

/// # Safety
/// Called once per file, after every other operation on it has finished.
unsafe extern "C" fn fanout_release(
    _inode: *mut bindings::inode,
    raw: *mut bindings::file,
) -> c_int {
    // SAFETY: `private_data` holds the `Private` from `fanout_open`; release
    // is its last user, so we take ownership back and drop it.
    drop(unsafe { <Private as ForeignOwnable>::from_foreign((*raw).private_data) });
    0
}

/// # Safety
/// `kiocb` is for one of our files and `iter` is a destination `iov_iter`.
unsafe extern "C" fn fanout_read_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: The VFS passes a valid kiocb whose `ki_filp` is our open file.
    let (raw, nowait) = unsafe { ((*kiocb).ki_filp, (*kiocb).ki_flags & IOCB_NOWAIT != 0) };
    // SAFETY: `raw` is open, see above.
    let of = unsafe { open_file(raw) };
    // SAFETY: `raw` is valid for this call.
    let nonblock = nowait || unsafe { (*raw).f_flags } & bindings::O_NONBLOCK != 0;
    // SAFETY: The VFS passes a valid destination iterator for this call.
    let iov = unsafe { IovIterDest::from_raw(iter) };
    match of.read(iov, nonblock) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
/// `kiocb` is for one of our files and `iter` is a source `iov_iter`.
unsafe extern "C" fn fanout_write_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: The VFS passes a valid kiocb whose `ki_filp` is our open file.
    let (raw, nowait) = unsafe { ((*kiocb).ki_filp, (*kiocb).ki_flags & IOCB_NOWAIT != 0) };
    // SAFETY: `raw` is open, see above.
    let of = unsafe { open_file(raw) };
    // SAFETY: `raw` is valid for this call.
    let nonblock = nowait || unsafe { (*raw).f_flags } & bindings::O_NONBLOCK != 0;
    // SAFETY: The VFS passes a valid source iterator for this call.
    let iov = unsafe { IovIterSource::from_raw(iter) };
    match of.write(iov, nonblock) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
/// `raw` is one of our open files; `wait` is null or a valid poll table.
unsafe extern "C" fn fanout_poll(
    raw: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: `raw` is open (caller contract).
    let of = unsafe { open_file(raw) };
    // SAFETY: `raw` is valid for this call, with no fdget_pos region active.
    let file = unsafe { File::from_raw_file(raw) };
    // SAFETY: `wait` is null or the valid poll table of this call (caller
    // contract).
    unsafe { of.poll(file, wait) }
}

/// # Safety
/// `raw` is one of our open files; `vma` is the VMA this mmap call sets up.
unsafe extern "C" fn fanout_mmap(
    raw: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: `raw` is open (caller contract).
    let of = unsafe { open_file(raw) };
    // SAFETY: The VFS passes the VMA being set up, with its mmap lock held,
    // for the duration of this call.
    let vma = unsafe { kernel::mm::virt::VmaNew::from_raw(vma) };
    match of.mmap(vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
/// `raw` is one of our open files.
unsafe extern "C" fn fanout_ioctl(raw: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: `raw` is open (caller contract).
    let of = unsafe { open_file(raw) };
    // SAFETY: `raw` is valid for this call.
    let nonblock = unsafe { (*raw).f_flags } & bindings::O_NONBLOCK != 0;
    match of.ioctl(cmd, arg, nonblock) {
        Ok(n) => n as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
/// `m` is a valid seq_file being filled for `raw`, one of our open files.
unsafe extern "C" fn fanout_show_fdinfo(m: *mut bindings::seq_file, raw: *mut bindings::file) {
    // SAFETY: `raw` is open (caller contract).
    let of = unsafe { open_file(raw) };
    // SAFETY: `m` is valid and ours for the duration of this call.
    let m = unsafe { SeqFile::from_raw(m) };
    of.show_fdinfo(m);
}

/// # Safety
/// Called by `chrdev_open` for the control node.
unsafe extern "C" fn control_open(inode: *mut bindings::inode, raw: *mut bindings::file) -> c_int {
    // SAFETY: `inode` and `raw` are the valid inode and file being opened.
    unsafe { bindings::stream_open(inode, raw) }
}

/// # Safety
/// `raw` is an open file of the control node.
unsafe extern "C" fn control_ioctl(raw: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: `raw` is valid for this call, with no fdget_pos region active.
    let file = unsafe { File::from_raw_file(raw) };
    match crate::control::ioctl(file, cmd, arg) {
        Ok(n) => n as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}
