//! `verify` on a decapsulating device (endpoint::tunnel): the program in
//! the device's attachment, run by the kernel on a SYN to the metadata
//! address shaped as the device hands up an inner packet (an Ethernet
//! frame to the device's MAC, or a bare IPv4 packet), as if on that
//! device (BPF_PROG_TEST_RUN with the device's ifindex), must drop it and
//! count it on the device. Nothing is sent: a real probe would have to
//! join the overlay (its VNI, its peers, a tun's daemon), and the test
//! run's packet never leaves the call.

use std::borrow::Cow;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, loaded_programs};
use egress_ebpf_common::counters::CounterId;

use crate::{
    endpoint::tunnel::{Layer, Tunnel},
    error::Error,
    kernel::pins::PinDir,
    observe::counters::read_interface,
    verify::probe::METADATA_PROBE,
};

/// `sizeof(struct __sk_buff)` and the offset of its `ifindex`: the test
/// run's skb is given the device (Linux 5.10+ takes an ifindex there).
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_IFINDEX: usize = 40;
/// `TC_ACT_SHOT`.
const SHOT: u32 = 2;

/// Why a tunnel's probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum TunnelProbeError {
    #[error("program {0} is not loaded in the kernel")]
    ProgramGone(u32),
    #[error("program {id}: {source}")]
    Program {
        id: u32,
        source: aya::programs::ProgramError,
    },
    #[error("reading the device's counters: {0}")]
    Counters(#[from] Error),
}

/// What the probe got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The program dropped the packet (`TC_ACT_SHOT`).
    pub dropped: bool,
    /// `metadata_blocked` on the device, after minus before.
    pub metadata_blocked: u64,
}

/// A TTL-1 TCP SYN to the metadata address as `layer` hands it up.
pub fn inner_syn(layer: Layer, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 1; // TTL 1, as the bridges' probes
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
    ip[16..20].copy_from_slice(&METADATA_PROBE.ip().octets());
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&METADATA_PROBE.port().to_be_bytes());
    ip[32] = 5 << 4;
    ip[33] = 0x02; // SYN
    match layer {
        Layer::Ip => ip,
        Layer::Ethernet => {
            let mut f = dst_mac.to_vec();
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            f.extend_from_slice(&ip);
            f
        }
    }
}

/// Runs program `program_id` (the one in `t`'s attachment) on
/// [`inner_syn`] as if on `t`.
pub fn probe(pins: &PinDir, t: &Tunnel, program_id: u32) -> Result<Outcome, TunnelProbeError> {
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == program_id)
        .ok_or(TunnelProbeError::ProgramGone(program_id))?;
    let prog =
        SchedClassifier::from_program_info(info, Cow::Borrowed("tunnel")).map_err(|source| {
            TunnelProbeError::Program {
                id: program_id,
                source,
            }
        })?;
    // To the device's own MAC: addressed to this host (PACKET_HOST).
    let frame = inner_syn(t.layer, t.mac.unwrap_or([0x02, 0, 0, 0, 0, 0x02]));
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[SK_BUFF_IFINDEX..SK_BUFF_IFINDEX + 4].copy_from_slice(&t.ifindex.to_ne_bytes());
    let before = read_interface(pins, t.ifindex)?;
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .map_err(|source| TunnelProbeError::Program {
            id: program_id,
            source,
        })?;
    let after = read_interface(pins, t.ifindex)?;
    let i = CounterId::MetadataBlocked as usize;
    Ok(Outcome {
        dropped: r.return_value == SHOT,
        metadata_blocked: after.by_verdict[i]
            .packets
            .saturating_sub(before.by_verdict[i].packets),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inner_syn_has_the_shape_of_its_layer() {
        let ip = inner_syn(Layer::Ip, [0; 6]);
        assert_eq!((ip[0], ip[8], ip[9], ip[33]), (0x45, 1, 6, 0x02));
        assert_eq!(ip[16..20], [169, 254, 169, 254]);
        let eth = inner_syn(Layer::Ethernet, [2, 0, 0, 0, 0, 9]);
        assert_eq!(eth[..6], [2, 0, 0, 0, 0, 9]);
        assert_eq!(eth[12..14], [0x08, 0x00]);
        assert_eq!(eth[14..], ip[..]);
    }
}
