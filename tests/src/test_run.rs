//! A loaded classifier on its own bpffs, driven by BPF_PROG_TEST_RUN: build
//! a frame, set up the maps with a policy, run, check verdict and counters.

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions},
};
use egress_ebpf_common::counters::CounterId;
use egress_loader::{
    kernel::{maps::PolicyMaps, object, pins::PinDir},
    observe::counters::{self, Snapshot},
    policy::{Overrides, Policy, apply},
};

use crate::bpffs::BpffsMount;

/// tc verdicts as BPF_PROG_TEST_RUN returns them.
pub const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC, i.e. TCX_NEXT
pub const DROP: u32 = 2; // TC_ACT_SHOT
pub const REDIRECT: u32 = 7; // TC_ACT_REDIRECT: a reject whose reply was sent

/// `sizeof(struct __sk_buff)` and the offset of its `mark`
/// (include/uapi/linux/bpf.h).
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_MARK: usize = 8;

pub struct Classifier {
    ebpf: Ebpf,
    pub pins: PinDir,
    maps: PolicyMaps,
    // Declared last: unmounted after the maps and program are closed.
    // `None` for a classifier sharing another one's maps.
    _mount: Option<BpffsMount>,
}

impl Classifier {
    /// Loads the embedded object with `policy_toml` applied.
    pub fn with_policy(policy_toml: &str) -> Self {
        let mount = BpffsMount::new();
        let pins = PinDir::new(mount.path().join("egress"));
        let ebpf = object::load(&pins).expect("load the classifier").0;
        let mut maps = PolicyMaps::open(&pins).expect("open the pinned maps");
        let p = Policy::from_toml(policy_toml, &Overrides::default()).expect("valid policy");
        apply::apply(&mut maps, &p).expect("apply the policy");
        Self {
            ebpf,
            pins,
            maps,
            _mount: Some(mount),
        }
    }

    /// A second program instance on the same pinned maps (same buckets and
    /// counters), e.g. to run BPF_PROG_TEST_RUN from two CPUs at once. Drop
    /// it before `other`, which owns the bpffs mount.
    pub fn sharing(other: &Classifier) -> Self {
        let pins = other.pins.clone();
        let ebpf = object::load(&pins).expect("load the classifier again").0;
        let maps = PolicyMaps::open(&pins).expect("open the pinned maps");
        Self {
            ebpf,
            pins,
            maps,
            _mount: None,
        }
    }

    pub fn defaults() -> Self {
        Self::with_policy("")
    }

    /// The policy maps of this classifier's pins, to write by hand.
    pub fn maps(&mut self) -> &mut PolicyMaps {
        &mut self.maps
    }

    pub fn apply(&mut self, policy_toml: &str) {
        let p = Policy::from_toml(policy_toml, &Overrides::default()).expect("valid policy");
        apply::apply(&mut self.maps, &p).expect("apply the policy");
    }

    /// Runs one frame through the program; returns the verdict.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs one frame through the program; `None` if BPF_PROG_TEST_RUN
    /// refuses the frame itself (too short for the kernel's skb setup).
    pub fn try_run(&mut self, frame: &[u8]) -> Option<u32> {
        let prog = object::classifier(&mut self.ebpf).expect("classifier");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        prog.test_run(opts).ok().map(|r| r.return_value)
    }

    /// Runs one frame; returns the verdict and the frame as the program left
    /// it (for a reject whose reply was sent: the reply).
    pub fn run_output(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = object::classifier(&mut self.ebpf).expect("classifier");
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// What became of the replies of rejecting rules so far.
    pub fn replies(&self) -> counters::ReplyStats {
        counters::read_reply_stats(&self.pins).expect("read REPLY_STATS")
    }

    /// Runs a frame `repeat` times in the kernel; returns the verdict and the
    /// kernel's mean duration per run in nanoseconds.
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> (u32, u64) {
        let prog = object::classifier(&mut self.ebpf).expect("classifier");
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        (r.return_value, r.duration.as_nanos() as u64)
    }

    /// Runs `frame` through `program` (`maps::PROGRAM`, `ENDPOINT_PROGRAM`)
    /// with `skb->mark` set to `mark`; returns the verdict and the mark the
    /// program left. The skb's device is the test namespace's loopback
    /// (ifindex 1): the endpoint program's endpoint id.
    pub fn run_marked(&mut self, program: &str, frame: &[u8], mark: u32) -> (u32, u32) {
        let (v, m, _) = self.run_marked_repeat(program, frame, mark, 1);
        (v, m)
    }

    /// [`run_marked`](Self::run_marked) `repeat` times in the kernel; also
    /// returns the kernel's mean duration per run in nanoseconds.
    pub fn run_marked_repeat(
        &mut self,
        program: &str,
        frame: &[u8],
        mark: u32,
        repeat: u32,
    ) -> (u32, u32, u64) {
        let prog: &mut aya::programs::SchedClassifier = self
            .ebpf
            .program_mut(program)
            .expect("program in the object")
            .try_into()
            .expect("a classifier");
        // struct __sk_buff: mark at offset 8 (the rest zero: the kernel
        // refuses fields it does not take from userspace).
        let mut ctx = [0u8; SK_BUFF_SIZE];
        ctx[SK_BUFF_MARK..SK_BUFF_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = [0u8; SK_BUFF_SIZE];
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..Default::default()
        };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        let out = u32::from_ne_bytes(ctx_out[SK_BUFF_MARK..SK_BUFF_MARK + 4].try_into().unwrap());
        (r.return_value, out, r.duration.as_nanos() as u64)
    }

    /// The endpoint maps of this classifier's pins.
    pub fn endpoint_maps(&self) -> egress_loader::kernel::maps::EndpointMaps {
        egress_loader::kernel::maps::EndpointMaps::open(&self.pins).expect("endpoint maps")
    }

    /// What the kernel reports of the loaded classifier (id, translated
    /// size, verified instructions).
    pub fn program_info(&mut self) -> aya::programs::ProgramInfo {
        object::classifier(&mut self.ebpf)
            .expect("classifier")
            .info()
            .expect("program info")
    }

    /// Every drop event waiting in the ring buffer.
    pub fn drain_events(&self) -> Vec<egress_ebpf_common::events::DropEvent> {
        use aya::maps::{Map, MapData, RingBuf};
        let data =
            MapData::from_pin(self.pins.map(egress_ebpf_common::maps::EVENTS)).expect("EVENTS pin");
        let mut ring: RingBuf<MapData> = Map::RingBuf(data).try_into().expect("ring buffer");
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert!(item.len() >= size_of::<egress_ebpf_common::events::DropEvent>());
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        out
    }

    pub fn counters(&self) -> Snapshot {
        counters::read(&self.pins).expect("read counters")
    }

    pub fn packets(&self, id: CounterId) -> u64 {
        self.counters().get(id).packets
    }

    /// Runs `frame` and asserts the verdict and that exactly `counter` moved
    /// by one packet (and `len` bytes).
    #[track_caller]
    pub fn expect(&mut self, what: &str, frame: &[u8], verdict: u32, counter: CounterId) {
        let before = self.counters();
        let got = self.run(frame);
        let after = self.counters();
        let v = |x: u32| {
            if x == PASS {
                "PASS".to_string()
            } else if x == DROP {
                "DROP".into()
            } else {
                x.to_string()
            }
        };
        assert_eq!(v(got), v(verdict), "{what}: verdict");
        for id in CounterId::ALL {
            let (b, a) = (before.get(id), after.get(id));
            let (dp, db) = (a.packets - b.packets, a.bytes - b.bytes);
            if id == counter {
                assert_eq!(
                    (dp, db),
                    (1, frame.len() as u64),
                    "{what}: counter {} should count this frame",
                    id.name()
                );
            } else {
                assert_eq!(
                    dp,
                    0,
                    "{what}: counter {} moved but {} was expected",
                    id.name(),
                    counter.name()
                );
            }
        }
    }
}
