// SPDX-License-Identifier: GPL-2.0
//! The thin unsafe layer: a misc device whose `file_operations` are ours.
//!
//! The kernel crate's `MiscDevice` trait has no `poll`, so, like the Rust
//! Binder driver, we write the `file_operations` table ourselves. Each entry
//! recovers the file's [`OpenFile`] and calls its safe method; all the logic
//! lives in `file.rs`.

use crate::file::OpenFile;
use crate::topic::Topic;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::{
    bindings,
    error::to_result,
    fs::File,
    iov::{IovIterDest, IovIterSource},
    module::this_module,
    prelude::*,
    seq_file::SeqFile,
    str::CString,
    sync::{poll::PollTable, Arc},
    types::{ForeignOwnable, Opaque},
};

type Private = Pin<KBox<OpenFile>>;

/// `IOCB_NOWAIT` (a C macro bindgen does not see): `RWF_NOWAIT`, set for
/// `preadv2(..., RWF_NOWAIT)` and io_uring.
const IOCB_NOWAIT: c_int = 0x8;

/// A registered device node for a topic.
///
/// # Invariants
///
/// `misc` is registered with `misc_register` from `register` until `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration {
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    topic: Arc<Topic>,
    _name: CString,
}

// SAFETY: `misc` is only touched by `misc_register`/`misc_deregister`, which
// may run on any thread; the other fields are `Send`.
unsafe impl Send for Registration {}
// SAFETY: No `&self` method mutates anything.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers `/dev/<name>` (mode `mode`) for `topic`.
    pub(crate) fn register(name: CString, mode: u16, topic: Arc<Topic>) -> Result<Pin<KBox<Self>>> {
        let name_ptr = name.as_char_ptr();
        KBox::try_pin_init(
            try_pin_init!(Self {
                topic,
                _name: name,
                misc <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                    // SAFETY: All-zero is a valid `struct miscdevice` (plain
                    // data, null pointers and an empty list head that
                    // `misc_register` initializes).
                    let mut misc: bindings::miscdevice = unsafe { core::mem::zeroed() };
                    misc.minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                    misc.name = name_ptr;
                    misc.fops = &FOPS.0;
                    misc.mode = mode;
                    // SAFETY: `slot` is valid for writes (pin-init contract).
                    unsafe { slot.write(misc) };
                    // SAFETY: `slot` holds an initialized miscdevice in pinned
                    // memory that is deregistered in `drop` before it is freed;
                    // `name_ptr` points into `_name`'s heap buffer, which lives
                    // as long as the registration.
                    to_result(unsafe { bindings::misc_register(slot) })
                }),
            }),
            GFP_KERNEL,
        )
    }

    /// The topic behind this node.
    #[allow(dead_code)] // Used once topics can be removed at run time.
    pub(crate) fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }
}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered since `register` by the type invariant.
        // `misc_deregister` takes `misc_mtx`, so no `fanout_open` is using
        // `self` after it returns.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

struct Fops(bindings::file_operations);
// SAFETY: The table is never written after its constant initialization.
unsafe impl Sync for Fops {}

static FOPS: Fops = Fops(bindings::file_operations {
    owner: this_module::<crate::LocalModule>().as_ptr(),
    open: Some(fanout_open),
    release: Some(fanout_release),
    read_iter: Some(fanout_read_iter),
    write_iter: Some(fanout_write_iter),
    poll: Some(fanout_poll),
    unlocked_ioctl: Some(fanout_ioctl),
    #[cfg(CONFIG_COMPAT)]
    compat_ioctl: bindings::compat_ptr_ioctl,
    show_fdinfo: Some(fanout_show_fdinfo),
    // SAFETY: All-zero is a valid `file_operations` (every entry optional).
    ..unsafe { core::mem::zeroed() }
});

/// # Safety
/// Called by `misc_open` with `misc_mtx` held and `private_data` set to the
/// `struct miscdevice` of one of our [`Registration`]s.
unsafe extern "C" fn fanout_open(inode: *mut bindings::inode, raw: *mut bindings::file) -> c_int {
    // SAFETY: `misc_open` stored our miscdevice in `private_data`; it is the
    // `misc` field of a `Registration` (`Opaque` is `repr(transparent)`), and
    // `misc_mtx`, held by our caller, keeps it registered and alive.
    let reg = unsafe {
        let misc = (*raw).private_data.cast::<Opaque<bindings::miscdevice>>();
        &*kernel::container_of!(misc, Registration, misc)
    };
    // SAFETY: `inode` and `raw` are the valid inode and file being opened.
    unsafe { bindings::stream_open(inode, raw) };
    // SAFETY: `raw` is valid for the duration of this call and no fdget_pos
    // region is active on it.
    let file = unsafe { File::from_raw_file(raw) };
    let mode = file.flags() & kernel::fs::file::flags::O_ACCMODE;
    let can_read = mode != kernel::fs::file::flags::O_WRONLY;
    let can_write = mode != kernel::fs::file::flags::O_RDONLY;
    match OpenFile::open(reg.topic.clone(), can_read, can_write) {
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
    let of = unsafe { open_file((*kiocb).ki_filp) };
    // SAFETY: The VFS passes a valid source iterator for this call.
    let iov = unsafe { IovIterSource::from_raw(iter) };
    match of.write(iov) {
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
    // SAFETY: `wait` is null or valid for this call (caller contract).
    let table = unsafe { PollTable::from_raw(wait) };
    of.poll(file, table)
}

/// # Safety
/// `raw` is one of our open files.
unsafe extern "C" fn fanout_ioctl(raw: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: `raw` is open (caller contract).
    let of = unsafe { open_file(raw) };
    match of.ioctl(cmd, arg) {
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
