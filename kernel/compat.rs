// SPDX-License-Identifier: GPL-2.0
//! Differences between the kernel versions the module builds on (7.2 and
//! 7.3), in one place. `Kbuild` passes `--cfg baf_kernel_7_3` when building
//! against 7.3 or newer; everything else in the module uses only this file's
//! names for these spots.
//!
//! What changed in the kernel crate between 7.2 and 7.3, as used here:
//! - the owning module's pointer: `module::this_module::<LocalModule>()`
//!   (7.3) instead of the `THIS_MODULE` static the `module!` macro made;
//! - module parameters: `value()` returns a copy (7.3) instead of a
//!   reference (7.3 calls that `value_ref()`);
//! - 7.2 has no `EBADMSG` and `ENAMETOOLONG` constants.

use kernel::{bindings, module_param::ModuleParamAccess};

/// The `struct module` that owns our file operations.
#[cfg(baf_kernel_7_3)]
pub(crate) const fn this_module() -> *mut bindings::module {
    kernel::module::this_module::<crate::LocalModule>().as_ptr()
}

/// The `struct module` that owns our file operations.
#[cfg(not(baf_kernel_7_3))]
pub(crate) const fn this_module() -> *mut bindings::module {
    crate::THIS_MODULE.as_ptr()
}

/// The value of a module parameter.
#[inline]
pub(crate) fn param<T: Copy>(p: &ModuleParamAccess<T>) -> T {
    #[cfg(baf_kernel_7_3)]
    {
        p.value()
    }
    #[cfg(not(baf_kernel_7_3))]
    {
        *p.value()
    }
}

/// `EBADMSG` (7.2's kernel crate has no constant for it).
pub(crate) fn ebadmsg() -> kernel::error::Error {
    kernel::error::Error::from_errno(-(bindings::EBADMSG as i32))
}

/// `ENAMETOOLONG` (7.2's kernel crate has no constant for it).
pub(crate) fn enametoolong() -> kernel::error::Error {
    kernel::error::Error::from_errno(-(bindings::ENAMETOOLONG as i32))
}
