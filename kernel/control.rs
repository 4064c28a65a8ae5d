// SPDX-License-Identifier: GPL-2.0
//! The control device, `/dev/baf-control`: create and remove topics.
//!
//! Whoever can open the node for writing may use it (it is root's, mode
//! 0660, group `control_gid`), so "who may create topics" is ordinary file
//! permission: root, or a group given the node. A non-root caller can give a
//! new topic only to itself and its own groups (as with chown).

use crate::abi::{self, TopicName, TopicSpec};
use crate::registry;
use kernel::{
    fs::{file::flags, File},
    prelude::*,
    transmute::FromBytes,
    uaccess::{UserPtr, UserSlice},
};

// SAFETY: `TopicName` is a byte array: every bit pattern is valid.
unsafe impl kernel::transmute::FromBytes for TopicName {}
// SAFETY: `TopicSpec` is `repr(C)`: a 72-byte name then u64, 6 x u32, with no
// padding, so every bit pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for TopicSpec {}

/// The ioctls of the control device.
pub(crate) fn ioctl(file: &File, cmd: u32, arg: usize) -> Result<isize> {
    if file.flags() & flags::O_ACCMODE == flags::O_RDONLY {
        return Err(EBADF);
    }
    let ptr = UserPtr::from_addr(arg);
    match cmd {
        abi::IOC_CREATE | abi::IOC_CREATE_V2 => {
            let len = if cmd == abi::IOC_CREATE {
                size_of::<TopicSpec>()
            } else {
                abi::TOPIC_SPEC_V2_SIZE
            };
            // A version 2 caller's struct ends before `flags`: those stay 0.
            let mut bytes = [0u8; size_of::<TopicSpec>()];
            let part = bytes.get_mut(..len).ok_or(EINVAL)?;
            UserSlice::new(ptr, len).reader().read_slice(part)?;
            let spec = TopicSpec::from_bytes_copy(&bytes).ok_or(EINVAL)?;
            let default_ring =
                u64::from(crate::compat::param(&crate::module_parameters::ring_size));
            let created = registry::create_from_user(&spec, default_ring)?;
            Ok(isize::from(created))
        }
        abi::IOC_REMOVE => {
            let name: TopicName = UserSlice::new(ptr, size_of::<TopicName>())
                .reader()
                .read()?;
            abi::check_name(name.as_bytes()).map_err(|_| EINVAL)?;
            registry::remove_from_user(name.as_bytes())?;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}
