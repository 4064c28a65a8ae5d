// SPDX-License-Identifier: GPL-2.0
//! fanout: publish/subscribe topics as character devices.
//!
//! Each topic is a one-to-many ring of whole records. Writers never block;
//! every open file reads with its own cursor; a reader that falls behind is
//! lapped, resumes at the oldest record left and has its loss counted.
//! `ABI.md` in this folder describes what userspace sees.
//!
//! Files, one concept each: `abi.rs` (the userspace ABI), `ring.rs` (the
//! record ring's bookkeeping, pure logic), `ringmem.rs` (the ring's
//! memory and mapped control page), `waitq.rs` (keyed wait queues),
//! `topic.rs` (ring + memory + wait queues + counters), `lossless.rs`
//! (lossless readers and the stall clock, part of a topic),
//! `provenance.rs` (writer pid/uid/time), `file.rs` (an open file: its
//! state, `open`, `poll`, `mmap`), with `read.rs`, `write.rs` and
//! `ioctl.rs` (its calls), `fops.rs` (the unsafe `file_operations` glue),
//! `compat.rs` (the differences between the kernel versions it builds on).

use kernel::{bindings, prelude::*, str::CString};

// `abi.rs` and `ring.rs` are also compiled into the userspace library, where
// their items are public API; here they are crate-internal.
#[allow(unreachable_pub, dead_code)]
mod abi;
mod atomics;
mod chardev;
mod compat;
mod control;
mod file;
mod fops;
mod provenance;
mod registry;
// Some accessors of the ring are used only by its host tests.
#[allow(unreachable_pub, dead_code)]
mod ring;
mod ringmem;
mod topic;
mod waitq;

module! {
    type: FanoutModule,
    name: "fanout",
    authors: ["baf developers"],
    description: "One-to-many record ring buffers as character devices (baf)",
    license: "GPL",
    params: {
        devices: u32 {
            default: 0,
            description: "Number of static topics /dev/fanout0../dev/fanoutN-1 (0-64); 0, the default, makes none",
        },
        ring_size: u32 {
            default: 65536,
            description: "Ring size of each topic in bytes: a power of two, 16384-67108864",
        },
        record_max: u32 {
            default: 0,
            description: "Largest record in bytes, 4096 to ring_size/4; 0 means ring_size/4",
        },
        control_gid: u32 {
            default: 0,
            description: "Group owning /dev/baf-control (mode 0660): its members may create and remove topics",
        },
        max_topics: u32 {
            default: 1024,
            description: "Most topics at once, static ones included (1-4095)",
        },
        max_ring_mb: u32 {
            default: 1024,
            description: "Most MiB of ring memory of all topics together (at least 1)",
        },
        selftest_warn: u32 {
            default: 0,
            description: "Test only: 1 makes the module WARN once at load, to prove the test harness catches kernel warnings",
        },
    },
}

const MAX_DEVICES: u32 = 64;
/// Mode of the static device nodes and of the control node: owner and group
/// only, never world.
const NODE_MODE: u16 = 0o660;

/// Validated module parameters.
struct Params {
    devices: u32,
    ring_size: u64,
    record_max: u64,
}

impl Params {
    fn from_module() -> Result<Self> {
        let devices = compat::param(&module_parameters::devices);
        let ring = compat::param(&module_parameters::ring_size);
        let record = compat::param(&module_parameters::record_max);
        if devices > MAX_DEVICES {
            pr_err!("devices={devices} is too many: at most {MAX_DEVICES}\n");
            return Err(EINVAL);
        }
        let max_topics = compat::param(&module_parameters::max_topics);
        if !(1..chardev::MINORS).contains(&max_topics) || devices > max_topics {
            pr_err!(
                "max_topics={max_topics} must be from 1 to {} and at least devices={devices}\n",
                chardev::MINORS - 1
            );
            return Err(EINVAL);
        }
        let max_ring_mb = compat::param(&module_parameters::max_ring_mb);
        if max_ring_mb == 0 {
            pr_err!("max_ring_mb=0: at least 1 MiB of rings is needed\n");
            return Err(EINVAL);
        }
        let Ok((ring_size, record_max)) =
            registry::check_sizes(u64::from(ring), u64::from(record), 0)
        else {
            if !u64::from(ring).is_power_of_two()
                || !(registry::RING_MIN..=registry::RING_MAX).contains(&u64::from(ring))
            {
                pr_err!(
                    "ring_size={ring} must be a power of two from {} to {}\n",
                    registry::RING_MIN,
                    registry::RING_MAX
                );
            } else {
                pr_err!(
                    "record_max={record} must be from {} to ring_size/4 ({})\n",
                    registry::RECORD_MIN,
                    ring / 4
                );
            }
            return Err(EINVAL);
        };
        if u64::from(devices) * ring_size > u64::from(max_ring_mb) << 20 {
            pr_err!(
                "devices={devices} rings of {ring_size} bytes exceed max_ring_mb={max_ring_mb}\n"
            );
            return Err(EINVAL);
        }
        Ok(Self {
            devices,
            ring_size,
            record_max,
        })
    }
}

struct FanoutModule {
    /// Taken and dropped by `drop` below, after every topic.
    control: Option<chardev::NodeHandle>,
    // Dropped after `drop` below, once every node is released.
    _region: chardev::Region,
}

impl kernel::Module for FanoutModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if compat::param(&module_parameters::selftest_warn) != 0 {
            kernel::warn_on!(true);
        }
        let p = Params::from_module()?;
        // SAFETY: Called once, here, before anything uses the registry.
        unsafe { registry::TOPICS.init() };
        let region = chardev::Region::new(&fops::CONTROL_FOPS.0, &fops::TOPIC_FOPS.0)?;
        let control = chardev::Node::add(
            region.major(),
            chardev::NodeSpec {
                kind: chardev::Kind::Control,
                minor: 0,
                name: CString::try_from_fmt(fmt!("baf-control"))?,
                path: CString::try_from_fmt(fmt!("baf-control"))?,
                mode: NODE_MODE,
                uid: bindings::kuid_t { val: 0 },
                gid: bindings::kgid_t {
                    val: compat::param(&module_parameters::control_gid),
                },
            },
        )?;
        registry::TOPICS.lock().set_major(region.major());
        // From here on, an error drops `this`, which removes what was made.
        let this = Self {
            control: Some(control),
            _region: region,
        };
        for i in 0..p.devices {
            let name = CString::try_from_fmt(fmt!("fanout{i}"))?;
            registry::create(
                name.to_bytes(),
                registry::Settings {
                    ring_size: p.ring_size,
                    record_max: p.record_max,
                    mode: NODE_MODE,
                    uid: 0,
                    gid: 0,
                    flags: 0,
                    stall_ms: 0,
                    fixed: true,
                },
            )?;
        }
        pr_info!(
            "{} static topics, ring {} bytes, records up to {} bytes\n",
            p.devices,
            p.ring_size,
            p.record_max
        );
        Ok(this)
    }
}

impl Drop for FanoutModule {
    fn drop(&mut self) {
        // Topic nodes go before the control node and the region.
        registry::clear();
        drop(self.control.take());
        // The driver core may release a node later (with
        // CONFIG_DEBUG_KOBJECT_RELEASE, seconds later): its release
        // function is ours, so wait for it before the module goes.
        chardev::wait_released();
        // No file is open (the module could not unload otherwise), so every
        // topic must be gone now.
        let live = topic::LIVE.load(kernel::sync::atomic::Relaxed);
        if live != 0 {
            pr_err!("{live} topics leaked at unload\n");
        } else {
            pr_info!("unloaded, no topic left\n");
        }
    }
}
