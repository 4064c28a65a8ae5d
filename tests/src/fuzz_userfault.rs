//! The fuzz's userfaultfd check: `read()`, `write()` and `IOC_SEEK` stalled
//! in a user copy hold no lock that others need.

use super::*;

const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

const fn uffd_ioc(dir: u32, nr: u32, size: usize) -> u64 {
    ((dir << 30) | ((size as u32) << 16) | (0xAA << 8) | nr) as u64
}
const UFFDIO_API: u64 = uffd_ioc(3, 0x3F, 24);
const UFFDIO_REGISTER: u64 = uffd_ioc(3, 0x00, 32);
const UFFDIO_ZEROPAGE: u64 = uffd_ioc(3, 0x04, 32);

/// Anonymous memory whose pages fault into a userfaultfd nobody serves
/// until we say so.
struct Uffd {
    fd: i32,
    base: usize,
    len: usize,
}

impl Uffd {
    fn new(pages: usize) -> Result<Self> {
        // SAFETY: the userfaultfd system call with flags only.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) }
            as i32;
        ensure!(fd >= 0, "userfaultfd: {}", io::Error::last_os_error());
        let mut api = [UFFD_API, 0, 0];
        // SAFETY: UFFDIO_API takes a struct uffdio_api (3 x u64).
        ensure!(
            unsafe { libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) } == 0,
            "UFFDIO_API: {}",
            io::Error::last_os_error()
        );
        let len = pages * page_size();
        // Never touched before it is registered below.
        let base = anon_map(len)?;
        let mut reg = [base as u64, len as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
        // SAFETY: UFFDIO_REGISTER takes a struct uffdio_register (4 x u64).
        ensure!(
            unsafe { libc::ioctl(fd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) } == 0,
            "UFFDIO_REGISTER: {}",
            io::Error::last_os_error()
        );
        Ok(Self {
            fd,
            base: base as usize,
            len,
        })
    }

    /// Waits for a page fault in the region; its address.
    fn fault(&self, secs: i32) -> Result<u64> {
        poll_in(self.fd, secs * 1000);
        let mut msg = [0u8; 32];
        // SAFETY: reading one uffd_msg (32 bytes).
        let n = unsafe { libc::read(self.fd, msg.as_mut_ptr().cast(), 32) };
        ensure!(
            n == 32,
            "no userfault within {secs} s ({})",
            io::Error::last_os_error()
        );
        ensure!(
            msg[0] == UFFD_EVENT_PAGEFAULT,
            "userfault event {:#x}",
            msg[0]
        );
        Ok(u64::from_ne_bytes(msg[16..24].try_into()?))
    }

    /// Maps a zero page at the faulting page: the stalled copy goes on.
    fn serve(&self, addr: u64) -> Result<()> {
        let page = page_size() as u64;
        let mut z = [addr & !(page - 1), page, 0, 0];
        // SAFETY: UFFDIO_ZEROPAGE takes a struct uffdio_zeropage (4 x u64).
        let rc = unsafe { libc::ioctl(self.fd, UFFDIO_ZEROPAGE as _, z.as_mut_ptr()) };
        ensure!(rc == 0, "UFFDIO_ZEROPAGE: {}", io::Error::last_os_error());
        Ok(())
    }
}

impl Drop for Uffd {
    fn drop(&mut self) {
        // SAFETY: our own mapping and descriptor; closing the descriptor
        // releases any fault still waiting (it then fails).
        unsafe {
            libc::munmap(self.base as *mut _, self.len);
            libc::close(self.fd);
        }
    }
}

fn fdinfo(fd: i32) -> Result<String> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    ensure!(
        s.contains("fanout_cursor_seq"),
        "fdinfo without fanout lines: {s}"
    );
    Ok(s)
}

/// Runs `probe` on another thread while something is stalled in a user
/// copy; it must finish within a few seconds.
fn probe_while_stalled(
    what: &str,
    probe: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<()> {
    match within(8, probe) {
        Some(r) => r.with_context(|| format!("while {what}")),
        None => bail!("while {what}, the probe did not finish within 8 s: a lock is held across the user copy"),
    }
}

/// A `read()`, a `write()` and an ioctl stalled in a user copy (the buffer
/// is a userfaultfd page nobody serves) hold no lock others need.
pub(crate) fn userfault() -> Result<()> {
    // --- read() stalled copying out.
    let path = fresh_topic("fuzz/uffd", 16384, false)?;
    let stalled = Topic::open(&path, false, false)?;
    let other = Arc::new(Topic::open(&path, false, true)?);
    let w = Arc::new(writer(&path)?);
    put(&w, b"hello")?;
    let u = Uffd::new(2)?;
    let (buf, fd) = (u.base, stalled.file().as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: reading into the registered region (2 pages).
        let n = unsafe { libc::read(fd, buf as *mut _, 4096) };
        let r = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
        let _ = tx.send(r);
        drop(stalled);
    });
    let addr = u.fault(10).context("read() into a userfaultfd page")?;
    let probe = {
        let (other, w) = (other.clone(), w.clone());
        move || -> Result<()> {
            fdinfo(fd)?;
            let got = get(other.file(), 4096)?;
            ensure!(got == b"hello", "the other reader got {got:?}");
            put(&w, b"during")?;
            let got = get(other.file(), 4096)?;
            ensure!(got == b"during", "the other reader got {got:?}");
            let mut info = abi::Info::default();
            // SAFETY: IOC_INFO on the stalled file, into a live Info.
            let rc = unsafe { libc::ioctl(fd, abi::IOC_INFO as _, &mut info) };
            ensure!(
                rc == 0 && info.next_seq == 2,
                "INFO of the stalled file: rc {rc}, {info:?}"
            );
            let mut o = CreateOptions::defaults();
            o.ring_size = 16384;
            control::create("fuzz/uffd2", &o)?;
            control::remove("fuzz/uffd2")?;
            Ok(())
        }
    };
    let r1 = probe_while_stalled("a read() is stalled in its copy", probe);
    u.serve(addr)?;
    let n = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| {
            anyhow::anyhow!("the stalled read() did not finish after its fault was served")
        })?
        .context("the stalled read()")?;
    // SAFETY: the read wrote `n` bytes at `buf`, now a real page.
    let got = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    r1?;
    ensure!(
        got.starts_with(b"hello"),
        "the stalled read() returned {got:?}"
    );
    drop(u);

    // --- a seek whose argument is in a stalled page.
    let u = Uffd::new(1)?;
    let seeker = Topic::open(&path, false, true)?;
    let (arg, sfd) = (u.base, seeker.file().as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: IOC_SEEK with its argument in the registered page.
        let rc = unsafe { libc::ioctl(sfd, abi::IOC_SEEK as _, arg) };
        let _ = tx.send(if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        });
        drop(seeker);
    });
    let addr = u.fault(10).context("IOC_SEEK from a userfaultfd page")?;
    let probe = {
        let (other, w) = (other.clone(), w.clone());
        move || -> Result<()> {
            other.seek(abi::SEEK_OLDEST, 0)?;
            put(&w, b"seek")?;
            let i = other.info()?;
            ensure!(i.next_seq >= 3, "next_seq {}", i.next_seq);
            Ok(())
        }
    };
    let r2 = probe_while_stalled("an IOC_SEEK is stalled reading its argument", probe);
    u.serve(addr)?; // a zero Seek: SEEK_OLDEST
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow::anyhow!("the stalled IOC_SEEK did not finish"))?
        .context("the stalled IOC_SEEK (a zero Seek is SEEK_OLDEST)")?;
    r2?;
    drop(u);

    // --- write() stalled copying in: readers, fdinfo, INFO, a
    // non-blocking writer and the topic's removal get through.
    let u = Uffd::new(1)?;
    let blocked = Topic::open(&path, false, false)?;
    let bfd = blocked.file().as_raw_fd();
    let (btx, brx) = mpsc::channel();
    thread::spawn(move || {
        let mut n = 0;
        let r = loop {
            match get(blocked.file(), 4096) {
                Ok(b) if b.is_empty() => break Ok(n),
                Ok(_) => n += 1,
                Err(e) => break Err(e),
            }
        };
        let _ = btx.send(r);
    });
    let (src, wfd) = (u.base, w.as_raw_fd());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // SAFETY: writing from the registered page.
        let n = unsafe { libc::write(wfd, src as *const _, 100) };
        let _ = tx.send(if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        });
    });
    let addr = u.fault(10).context("write() from a userfaultfd page")?;
    let probe = {
        let (other, path) = (other.clone(), path.clone());
        move || -> Result<()> {
            fdinfo(wfd)?;
            fdinfo(bfd)?;
            let _ = other.info()?;
            match get(other.file(), 4096) {
                Ok(_) => {}
                Err(e) if errno(&e) == libc::EAGAIN => {}
                Err(e) => return Err(e).context("read beside a stalled writer"),
            }
            let nb = open_nb(&path, false, true)?;
            match (&nb).write(b"nb") {
                Ok(2) => {}
                Err(e) if errno(&e) == libc::EAGAIN => {}
                r => bail!("a non-blocking writer beside a stalled one: {r:?}"),
            }
            control::remove("fuzz/uffd").context("remove the topic of a stalled writer")?;
            Ok(())
        }
    };
    let r3 = probe_while_stalled("a write() is stalled in its copy", probe);
    let eof = brx.recv_timeout(Duration::from_secs(8));
    u.serve(addr)?;
    let wr = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
        anyhow::anyhow!("the stalled write() did not finish after its fault was served")
    })?;
    r3?;
    match wr {
        Ok(100) => {}
        Err(e) if errno(&e) == libc::ENODEV => {}
        r => bail!("the stalled write() after the topic's removal: {r:?}, want 100 or ENODEV"),
    }
    eof.map_err(|_| anyhow::anyhow!("a reader blocked in read() got no EOF while a writer was stalled and the topic was removed"))?
        .context("the blocked reader")?;
    let _ = control::remove("fuzz/uffd");
    Ok(())
}
