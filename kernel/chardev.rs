// SPDX-License-Identifier: GPL-2.0
//! The thin unsafe layer for device nodes: one char-device region, the
//! `baf` device class, and a `struct device` per node.
//!
//! Each node's devtmpfs path, owner, group and mode come from the kernel
//! itself (the device type's `devnode` callback), so `/dev/baf/<name>` has
//! the right permissions from its first instant, with udev or without it.
//!
//! Minor 0 is the control device (`/dev/baf-control`); topics use minors
//! 1..[`MINORS`]. Opens are routed by minor through the registry, so a
//! device being removed can never be reached through a stale pointer.

use crate::abi;
use crate::topic::Topic;
use core::ptr::NonNull;
use kernel::{
    bindings,
    error::to_result,
    ffi::{c_char, c_void},
    prelude::*,
    str::CString,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc,
    },
    types::Opaque,
};

/// Nodes made and not yet released. The driver core may release a device
/// after `device_unregister` returns (later still with
/// `CONFIG_DEBUG_KOBJECT_RELEASE`), and `node_release` is this module's
/// code: the module's exit waits for this to reach 0 ([`wait_released`]).
static NODES: Atomic<u64> = Atomic::new(0);

/// 1 while the class is registered and not yet released. Its kobject's
/// release, too, may run after `class_unregister` returns (seconds later
/// with `CONFIG_DEBUG_KOBJECT_RELEASE`), and it reads `CLASS`, which is in
/// this module's memory: so the region waits for it ([`class_released`])
/// before the module goes. The debug kernel's reload test caught the
/// release reading the unloaded module's `CLASS`.
static CLASS_HELD: Atomic<u64> = Atomic::new(0);

/// Waits (up to 30 s, logging if that runs out) until every node ever made
/// has been released, so no `node_release` can run after the module is
/// gone. Called at unload, after every node was unregistered.
pub(crate) fn wait_released() {
    wait_zero(&NODES, "device nodes");
}

/// Waits (up to 30 s, logging if that runs out) until `count` is 0.
fn wait_zero(count: &Atomic<u64>, what: &str) {
    for _ in 0..3000 {
        if count.load(Acquire) == 0 {
            return;
        }
        // SAFETY: Process context (module exit), where sleeping is allowed.
        unsafe { bindings::msleep(10) };
    }
    pr_err!(
        "{} {what} still not released at unload\n",
        count.load(Acquire)
    );
}

/// # Safety
/// Called by the driver core once, when the class's last reference is gone.
unsafe extern "C" fn class_released(_class: *const bindings::class) {
    // Last: the module's exit may go on once this is 0. What the driver
    // core does after this call (freeing its own private data) does not
    // touch `CLASS`.
    CLASS_HELD.store(0, Release);
}

/// Minors of the region: the control device plus up to 4095 topics.
pub(crate) const MINORS: u32 = 4096;
const MINORBITS: u32 = 20;

/// What a node is for.
pub(crate) enum Kind {
    /// The control device.
    Control,
    /// A topic; the node keeps it alive for sysfs.
    Topic(Arc<Topic>),
}

/// The kernel's `struct device` of one node, and what its callbacks need.
///
/// # Invariants
///
/// Allocated by [`Node::add`] and freed only by `node_release`, when the
/// device's last reference is dropped.
#[repr(C)]
pub(crate) struct Node {
    dev: Opaque<bindings::device>,
    kind: Kind,
    /// devtmpfs path, relative to /dev.
    path: CString,
    /// Topic name (shown in sysfs).
    name: CString,
    mode: u16,
    uid: bindings::kuid_t,
    gid: bindings::kgid_t,
}

/// A registered node; dropping it removes the device.
pub(crate) struct NodeHandle(NonNull<Node>);

// SAFETY: The handle only calls `device_unregister`, which may run on any
// thread; the node's fields are immutable after `add`.
unsafe impl Send for NodeHandle {}
// SAFETY: A shared `NodeHandle` offers no methods at all.
unsafe impl Sync for NodeHandle {}

/// Node attributes as they are given to [`Node::add`].
pub(crate) struct NodeSpec {
    pub(crate) kind: Kind,
    pub(crate) minor: u32,
    /// Device name in sysfs (`/` becomes `!` there).
    pub(crate) name: CString,
    pub(crate) path: CString,
    pub(crate) mode: u16,
    pub(crate) uid: bindings::kuid_t,
    pub(crate) gid: bindings::kgid_t,
}

impl Node {
    /// Registers a device node with number `major:spec.minor`.
    pub(crate) fn add(major: u32, spec: NodeSpec) -> Result<NodeHandle> {
        let devt = (major << MINORBITS) | spec.minor;
        let node = KBox::new(
            Node {
                dev: Opaque::zeroed(),
                kind: spec.kind,
                path: spec.path,
                name: spec.name,
                mode: spec.mode,
                uid: spec.uid,
                gid: spec.gid,
            },
            GFP_KERNEL,
        )?;
        let raw = KBox::into_raw(node);
        // From here on `node_release` will run once, whatever happens.
        NODES.add(1, Relaxed);
        // SAFETY: `raw` is a valid, exclusively owned `Node` whose `dev` is
        // zeroed, as `device_initialize` requires. From here on the device's
        // reference count owns the allocation: `node_release` frees it.
        let dev = unsafe { (*raw).dev.get() };
        // SAFETY: `dev` is valid and zeroed; the fields written are plain
        // data the driver core expects callers to set before `device_add`,
        // and the pointers are to statics that outlive the device.
        unsafe {
            bindings::device_initialize(dev);
            (*dev).devt = devt;
            (*dev).class = &CLASS.0;
            (*dev).type_ = match (*raw).kind {
                Kind::Control => &CONTROL_TYPE.0,
                Kind::Topic(_) => &TOPIC_TYPE.0,
            };
            (*dev).release = Some(node_release);
            bindings::dev_set_drvdata(dev, raw.cast::<c_void>());
        }
        // SAFETY: `dev` is initialized; the format takes one C string, the
        // node's own name, which lives as long as the device.
        let named =
            unsafe { bindings::dev_set_name(dev, c"%s".as_char_ptr(), (*raw).name.as_char_ptr()) };
        // SAFETY: `dev` is initialized and named (or the add fails cleanly).
        let added = to_result(named).and_then(|()| to_result(unsafe { bindings::device_add(dev) }));
        if let Err(e) = added {
            // SAFETY: Drops the initial reference; `node_release` frees `raw`.
            unsafe { bindings::put_device(dev) };
            return Err(e);
        }
        // SAFETY: `raw` came from `KBox::into_raw`, so it is not null.
        Ok(NodeHandle(unsafe { NonNull::new_unchecked(raw) }))
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        // SAFETY: The handle holds the initial device reference, so the node
        // is alive; `device_unregister` removes the device (and its devtmpfs
        // node and sysfs files, waiting for running sysfs callbacks) and
        // drops that reference.
        unsafe { bindings::device_unregister((*self.0.as_ptr()).dev.get()) };
    }
}

/// # Safety
/// Called by the driver core once the last reference to `dev` is gone.
unsafe extern "C" fn node_release(dev: *mut bindings::device) {
    // SAFETY: `dev` is the `dev` field of a `Node` leaked by `Node::add`
    // (`repr(C)`, first field); nothing uses the node any more.
    drop(unsafe { KBox::from_raw(dev.cast::<Node>()) });
    // Last: the module's exit may go on once this is 0.
    NODES.fetch_sub(1, Release);
}

/// The node of a device of ours.
///
/// # Safety
/// `dev` belongs to the `baf` class and is not yet released.
unsafe fn node_of<'a>(dev: *const bindings::device) -> Option<&'a Node> {
    // SAFETY: Our devices' drvdata is their `Node` (set in `add` before
    // `device_add`), alive until release.
    unsafe { bindings::dev_get_drvdata(dev).cast::<Node>().as_ref() }
}

/// # Safety
/// Called by the driver core (devtmpfs, uevents) for a live device of ours;
/// the out pointers are null or valid.
unsafe extern "C" fn devnode(
    dev: *const bindings::device,
    mode: *mut bindings::umode_t,
    uid: *mut bindings::kuid_t,
    gid: *mut bindings::kgid_t,
) -> *mut c_char {
    // SAFETY: Caller contract.
    let Some(node) = (unsafe { node_of(dev) }) else {
        return core::ptr::null_mut();
    };
    // SAFETY: Each out pointer is checked for null and is otherwise valid.
    unsafe {
        if !mode.is_null() {
            *mode = node.mode;
        }
        if !uid.is_null() {
            *uid = node.uid;
        }
        if !gid.is_null() {
            *gid = node.gid;
        }
        // The driver core frees the returned copy with `kfree`.
        bindings::kstrdup(node.path.as_char_ptr(), bindings::GFP_KERNEL)
    }
}

// --- sysfs: /sys/class/baf/<name>/<stat> ----------------------------------

const STATS: [&CStr; 15] = [
    c"name",
    c"ring_size",
    c"record_max",
    c"records",
    c"bytes",
    c"readers",
    c"writers",
    c"lost",
    c"next_seq",
    c"oldest_seq",
    c"lossless",
    c"stall_ms",
    c"lossless_readers",
    c"writer_waits",
    c"demoted",
];

/// Writes `bytes` and a newline into `out`; returns the length written.
fn emit(out: &mut [u8], bytes: &[u8]) -> usize {
    let len = bytes.len().min(out.len().saturating_sub(1));
    if let (Some(dst), Some(src)) = (out.get_mut(..len), bytes.get(..len)) {
        dst.copy_from_slice(src);
    }
    if let Some(nl) = out.get_mut(len) {
        *nl = b'\n';
        len + 1
    } else {
        0
    }
}

fn stat(topic: &Topic, node: &Node, which: usize, out: &mut [u8]) -> usize {
    let v = match which {
        0 => return emit(out, node.name.to_bytes()),
        1 => topic.state.lock().ring.size(),
        2 => topic.record_max as u64,
        3 => topic.stats.records.get(),
        4 => topic.stats.bytes.get(),
        5 => topic.stats.readers.get(),
        6 => topic.stats.writers.get(),
        7 => topic.stats.lost.get(),
        8 => topic.state.lock().ring.next_seq(),
        9 => topic.state.lock().ring.oldest_seq(),
        10 => u64::from(topic.flags & abi::TOPIC_LOSSLESS != 0),
        11 => u64::from(topic.stall_ms),
        12 => topic.stats.lossless_readers.get(),
        13 => topic.stats.writer_waits.get(),
        _ => topic.stats.demoted.get(),
    };
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut x = v;
    while i > 0 {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (x % 10) as u8;
        }
        x /= 10;
        if x == 0 {
            break;
        }
    }
    emit(out, digits.get(i..).unwrap_or_default())
}

/// # Safety
/// sysfs `show` contract: `dev` is one of our live topic devices, `attr` one
/// of [`ATTRS`], `buf` a `PAGE_SIZE` buffer.
unsafe extern "C" fn show(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut c_char,
) -> isize {
    // SAFETY: Caller contract.
    let Some(node) = (unsafe { node_of(dev) }) else {
        return ENODEV.to_errno() as isize;
    };
    let Kind::Topic(topic) = &node.kind else {
        return ENODEV.to_errno() as isize;
    };
    let Some(which) = ATTRS
        .0
        .iter()
        .position(|a| core::ptr::eq(a, attr.cast_const()))
    else {
        return EINVAL.to_errno() as isize;
    };
    // SAFETY: sysfs hands `show` a zeroed buffer of PAGE_SIZE bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), bindings::PAGE_SIZE) };
    stat(topic, node, which, out) as isize
}

/// Makes the statics below `Sync`: they are written only by their constant
/// initializers (the driver core takes them as `const`).
#[repr(transparent)]
struct Static<T>(T);
// SAFETY: See above: never mutated after initialization.
unsafe impl<T> Sync for Static<T> {}

/// `CStrExt::as_char_ptr` for constant initializers (it is not `const`).
#[allow(clippy::disallowed_methods)] // The cast makes the sign right.
const fn cptr(s: &'static CStr) -> *const c_char {
    s.as_ptr().cast()
}

const fn ro_attr(name: &'static CStr) -> bindings::device_attribute {
    // SAFETY: All-zero is a valid `device_attribute` (null pointers, no
    // callbacks); the fields that matter are set below.
    let mut a: bindings::device_attribute = unsafe { core::mem::zeroed() };
    a.attr.name = cptr(name);
    a.attr.mode = 0o444;
    a.__bindgen_anon_1.show = Some(show);
    a
}

static ATTRS: Static<[bindings::device_attribute; STATS.len()]> = Static([
    ro_attr(STATS[0]),
    ro_attr(STATS[1]),
    ro_attr(STATS[2]),
    ro_attr(STATS[3]),
    ro_attr(STATS[4]),
    ro_attr(STATS[5]),
    ro_attr(STATS[6]),
    ro_attr(STATS[7]),
    ro_attr(STATS[8]),
    ro_attr(STATS[9]),
    ro_attr(STATS[10]),
    ro_attr(STATS[11]),
    ro_attr(STATS[12]),
    ro_attr(STATS[13]),
    ro_attr(STATS[14]),
]);

static ATTR_LIST: Static<[*const bindings::attribute; STATS.len() + 1]> = Static([
    &raw const ATTRS.0[0].attr,
    &raw const ATTRS.0[1].attr,
    &raw const ATTRS.0[2].attr,
    &raw const ATTRS.0[3].attr,
    &raw const ATTRS.0[4].attr,
    &raw const ATTRS.0[5].attr,
    &raw const ATTRS.0[6].attr,
    &raw const ATTRS.0[7].attr,
    &raw const ATTRS.0[8].attr,
    &raw const ATTRS.0[9].attr,
    &raw const ATTRS.0[10].attr,
    &raw const ATTRS.0[11].attr,
    &raw const ATTRS.0[12].attr,
    &raw const ATTRS.0[13].attr,
    &raw const ATTRS.0[14].attr,
    core::ptr::null(),
]);

static GROUP: Static<bindings::attribute_group> = Static(bindings::attribute_group {
    __bindgen_anon_2: bindings::attribute_group__bindgen_ty_2 {
        attrs: ATTR_LIST.0.as_ptr().cast_mut().cast(),
    },
    // SAFETY: All-zero is a valid attribute group (no name, no callbacks).
    ..unsafe { core::mem::zeroed() }
});

static GROUPS: Static<[*const bindings::attribute_group; 2]> =
    Static([&raw const GROUP.0, core::ptr::null()]);

static TOPIC_TYPE: Static<bindings::device_type> = Static(bindings::device_type {
    name: cptr(c"baf_topic"),
    groups: GROUPS.0.as_ptr().cast_mut(),
    devnode: Some(devnode),
    // SAFETY: All-zero is a valid `device_type` (every callback optional).
    ..unsafe { core::mem::zeroed() }
});

static CONTROL_TYPE: Static<bindings::device_type> = Static(bindings::device_type {
    name: cptr(c"baf_control"),
    devnode: Some(devnode),
    // SAFETY: As above.
    ..unsafe { core::mem::zeroed() }
});

static CLASS: Static<bindings::class> = Static(bindings::class {
    name: cptr(c"baf"),
    class_release: Some(class_released),
    // SAFETY: All-zero is a valid `class` (every callback optional).
    ..unsafe { core::mem::zeroed() }
});

// --- the region -------------------------------------------------------------

/// The char-device numbers (control: minor 0; topics: the rest) and the
/// class.
///
/// # Invariants
///
/// Between `new` and `drop`: both minor ranges of `major` are registered
/// with their fops, and `CLASS` is registered.
pub(crate) struct Region {
    major: u32,
}

const NAME: &CStr = c"baf";

impl Region {
    /// Registers the class and the two minor ranges.
    pub(crate) fn new(
        control_fops: &'static bindings::file_operations,
        topic_fops: &'static bindings::file_operations,
    ) -> Result<Self> {
        // Held from before the registration, so the release cannot be
        // missed; a failed registration releases nothing.
        CLASS_HELD.store(1, Release);
        // SAFETY: `CLASS` is a static, valid class description.
        if let Err(e) = to_result(unsafe { bindings::class_register(&CLASS.0) }) {
            CLASS_HELD.store(0, Release);
            return Err(e);
        }
        // SAFETY: Major 0 asks for a free major; name and fops are static.
        let major =
            unsafe { bindings::__register_chrdev(0, 0, 1, NAME.as_char_ptr(), control_fops) };
        let Ok(major) = u32::try_from(major) else {
            // SAFETY: The class was registered above.
            unsafe { bindings::class_unregister(&CLASS.0) };
            wait_zero(&CLASS_HELD, "device classes");
            return Err(Error::from_errno(major));
        };
        // SAFETY: As above, for the topic minors of the same major.
        let rc = unsafe {
            bindings::__register_chrdev(major, 1, MINORS - 1, NAME.as_char_ptr(), topic_fops)
        };
        if rc < 0 {
            // SAFETY: Undoes the two registrations above.
            unsafe {
                bindings::__unregister_chrdev(major, 0, 1, NAME.as_char_ptr());
                bindings::class_unregister(&CLASS.0);
            }
            wait_zero(&CLASS_HELD, "device classes");
            return Err(Error::from_errno(rc));
        }
        Ok(Self { major })
    }

    /// The major number.
    pub(crate) fn major(&self) -> u32 {
        self.major
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: By the type invariant all three were registered in `new`;
        // every node of the class was removed before (the registry is
        // emptied first), and open files hold a module reference, so none
        // exist.
        unsafe {
            bindings::__unregister_chrdev(self.major, 1, MINORS - 1, NAME.as_char_ptr());
            bindings::__unregister_chrdev(self.major, 0, 1, NAME.as_char_ptr());
            bindings::class_unregister(&CLASS.0);
        }
        // The class's release reads `CLASS`: wait for it before the module
        // (and `CLASS` with it) goes.
        wait_zero(&CLASS_HELD, "device classes");
    }
}

/// The minor number of an inode of ours.
///
/// # Safety
/// `inode` is valid.
pub(crate) unsafe fn minor_of(inode: *const bindings::inode) -> u32 {
    // SAFETY: Caller contract.
    let rdev = unsafe { (*inode).i_rdev };
    rdev & ((1 << MINORBITS) - 1)
}
