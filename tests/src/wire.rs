//! Frames on the wire: send hand-built frames from inside a namespace with
//! an AF_PACKET socket, and capture what reaches an interface in another.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;
use crate::workers::Workers;

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_VNET_HDR: libc::c_int = 15;

fn packet_socket(ifname: &str, vnet_hdr: bool) -> Result<(OwnedFd, i32)> {
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL.to_be() as i32) };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(ifname)
        .with_context(|| format!("ifindex of {ifname}"))? as i32;
    if vnet_hdr {
        let one: libc::c_int = 1;
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_VNET_HDR,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        if rc != 0 {
            bail!("PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
        }
    }
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = index;
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        bail!("bind to {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok((fd, index))
}

/// How the kernel should build the skb for a sent frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// All bytes in the linear area (the usual case).
    Linear,
    /// Only the Ethernet header linear, the rest in page fragments: a
    /// virtio-net header with hdr_len 14. The kernel makes frames larger than
    /// a page non-linear this way (net/packet/af_packet.c, packet_alloc_skb).
    Paged,
}

/// Sends `frames` out of `ifname` inside `ns`, as they are.
pub fn send_frames(ns: &NetNs, ifname: &str, frames: &[Vec<u8>], layout: Layout) -> Result<()> {
    let ifname = ifname.to_owned();
    let frames = frames.to_vec();
    ns.run_in(move || -> Result<()> {
        let (fd, _) = packet_socket(&ifname, layout == Layout::Paged)?;
        for f in &frames {
            let mut buf = Vec::with_capacity(f.len() + 10);
            if layout == Layout::Paged {
                // struct virtio_net_hdr (little endian): flags, gso_type,
                // hdr_len = 14, gso_size, csum_start, csum_offset.
                buf.extend_from_slice(&[0, 0, 14, 0, 0, 0, 0, 0, 0, 0]);
            }
            buf.extend_from_slice(f);
            let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                bail!("send on {ifname}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    })?
}

/// Frames seen on an interface, captured by a background thread until drop.
pub struct Capture {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    _capturer: Workers,
}

impl Capture {
    pub fn start(ns: &NetNs, ifname: &str) -> Result<Self> {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let (f, ifname, ns_name) = (frames.clone(), ifname.to_owned(), ns.path().to_path_buf());
        let mut capturer = Workers::new();
        capturer.spawn(format!("capture-{ifname}"), move |stop| {
            let setup = (|| -> Result<OwnedFd> {
                let netns = std::fs::File::open(&ns_name)?;
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let (fd, _) = packet_socket(&ifname, false)?;
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        size_of::<libc::timeval>() as u32,
                    )
                };
                Ok(fd)
            })();
            let fd = match setup {
                Ok(fd) => {
                    let _ = tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    f.lock().unwrap().push(buf[..n as usize].to_vec());
                }
            }
        })?;
        rx.recv_timeout(Duration::from_secs(5))
            .context("capture thread start")??;
        Ok(Self {
            frames,
            _capturer: capturer,
        })
    }

    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }

    /// Captured IPv4 packets (after the Ethernet header) with this IP ID.
    pub fn v4_with_id(&self, id: u16) -> usize {
        self.frames()
            .iter()
            .filter(|f| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[18..20] == id.to_be_bytes())
            .count()
    }

    /// Captured IPv6 packets with this flow label.
    pub fn v6_with_flow(&self, flow: u32) -> usize {
        self.frames()
            .iter()
            .filter(|f| {
                f.len() >= 54
                    && f[12..14] == [0x86, 0xdd]
                    && u32::from_be_bytes([f[14], f[15], f[16], f[17]]) & 0xf_ffff == flow
            })
            .count()
    }
}

/// The MAC address of `ifname` in `ns`.
pub fn mac(ns: &NetNs, ifname: &str) -> Result<[u8; 6]> {
    // Not /sys/class/net: sysfs shows the namespace it was mounted in.
    let json = ns.exec_stdout(&["ip", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let s = v[0]["address"].as_str().context("no address")?;
    let mut m = [0u8; 6];
    for (i, part) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(m)
}
