// SPDX-License-Identifier: GPL-2.0
//! fanout: publish/subscribe topics as character devices.
//!
//! Each topic is a one-to-many ring of whole records. Writers never block;
//! every open file reads with its own cursor; a reader that falls behind is
//! lapped, resumes at the oldest record left and has its loss counted.
//! `ABI.md` in this folder describes what userspace sees.
//!
//! Files, one concept each: `abi.rs` (the userspace ABI), `ring.rs` (the
//! record ring, pure logic), `topic.rs` (ring + wait queue + counters),
//! `provenance.rs` (writer pid/uid/time), `file.rs` (an open file's
//! operations), `fops.rs` (the unsafe `file_operations` glue).

use kernel::{prelude::*, str::CString};

// `abi.rs` and `ring.rs` are also compiled into the userspace library, where
// their items are public API; here they are crate-internal.
#[allow(unreachable_pub, dead_code)]
mod abi;
mod file;
mod fops;
mod provenance;
#[allow(unreachable_pub)]
mod ring;
mod topic;

module! {
    type: FanoutModule,
    name: "fanout",
    authors: ["baf developers"],
    description: "One-to-many record ring buffers as character devices (baf)",
    license: "GPL",
    params: {
        devices: u32 {
            default: 1,
            description: "Number of static topics /dev/fanout0../dev/fanoutN-1 (0-64)",
        },
        ring_size: u32 {
            default: 65536,
            description: "Ring size of each topic in bytes: a power of two, 16384-67108864",
        },
        record_max: u32 {
            default: 0,
            description: "Largest record in bytes, 4096 to ring_size/4; 0 means ring_size/4",
        },
        selftest_warn: bool {
            default: false,
            description: "Test only: WARN once at load, to prove the test harness catches kernel warnings",
        },
    },
}

const MAX_DEVICES: u32 = 64;
const RING_MIN: u32 = 16 * 1024;
const RING_MAX: u32 = 64 * 1024 * 1024;
const RECORD_MIN: u32 = 4096;
/// Mode of the static device nodes: owner and group only, never world.
const STATIC_MODE: u16 = 0o660;

/// Validated module parameters.
struct Params {
    devices: u32,
    ring_size: usize,
    record_max: usize,
}

impl Params {
    fn from_module() -> Result<Self> {
        let devices = module_parameters::devices.value();
        let ring = module_parameters::ring_size.value();
        let record = module_parameters::record_max.value();
        if devices > MAX_DEVICES {
            pr_err!("devices={devices} is too many: at most {MAX_DEVICES}\n");
            return Err(EINVAL);
        }
        if !ring.is_power_of_two() || !(RING_MIN..=RING_MAX).contains(&ring) {
            pr_err!("ring_size={ring} must be a power of two from {RING_MIN} to {RING_MAX}\n");
            return Err(EINVAL);
        }
        let quarter = ring / 4;
        let record = if record == 0 { quarter } else { record };
        if !(RECORD_MIN..=quarter).contains(&record) {
            pr_err!("record_max={record} must be from {RECORD_MIN} to ring_size/4 ({quarter})\n");
            return Err(EINVAL);
        }
        Ok(Self {
            devices,
            ring_size: ring as usize,
            record_max: record as usize,
        })
    }
}

struct FanoutModule {
    _devices: KVec<Pin<KBox<fops::Registration>>>,
}

impl kernel::Module for FanoutModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if module_parameters::selftest_warn.value() {
            kernel::warn_on!(true);
        }
        let p = Params::from_module()?;
        let mut devices = KVec::with_capacity(p.devices as usize, GFP_KERNEL)?;
        for i in 0..p.devices {
            let topic = topic::Topic::new(p.ring_size, p.record_max)?;
            let name = CString::try_from_fmt(fmt!("fanout{i}"))?;
            devices.push(
                fops::Registration::register(name, STATIC_MODE, topic)?,
                GFP_KERNEL,
            )?;
        }
        pr_info!(
            "{} topics, ring {} bytes, records up to {} bytes\n",
            p.devices,
            p.ring_size,
            p.record_max
        );
        Ok(Self { _devices: devices })
    }
}
