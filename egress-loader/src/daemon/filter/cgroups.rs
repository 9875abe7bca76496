//! The cgroup hooks in line with the targets of `attach.cgroups` and what
//! the engine reports (daemon::cgroups holds their state), and what is
//! attached, published for coverage.

use crate::{
    daemon::filter::Filter, endpoint::cgroup::EngineCgroups, kernel::cgroup::CgroupFs,
    policy::cgroups::CgroupSpec,
};

impl Filter {
    /// The cgroup half of [`Filter::reconcile`].
    pub fn reconcile_cgroups(&mut self) {
        let c = &mut self.coverage;
        // `auto` is final once the engine's cgroups are known: until then a
        // previous run's links stay (no gap on a restart).
        let settled = !c.engine
            || c.engine_cgroups.is_some()
            || !self.policy.cgroups.contains(&CgroupSpec::Auto);
        c.hooks.reconcile(
            &mut self.ebpf,
            &self.pins,
            &self.policy.cgroups,
            c.engine_cgroups.as_ref(),
            settled,
        );
        self.publish_attached();
    }

    /// What is attached now, for coverage.
    pub(super) fn publish_attached(&self) {
        // The bridges, and the endpoints' veths by their pinned links (as
        // `status` reads them): a container whose veth program runs is the
        // veth's.
        let mut interfaces: Vec<String> = self.attached.keys().cloned().collect();
        interfaces.extend(self.pins.pinned_links());
        interfaces.sort();
        interfaces.dedup();
        self.coverage
            .hooks
            .publish(&self.pins, interfaces, &self.coverage.attached);
    }

    /// The engine's cgroups changed (the coverage task lists them): `auto`
    /// follows.
    pub fn engine_cgroups_changed(&mut self, cgroups: Option<EngineCgroups>) {
        self.coverage.engine_cgroups = cgroups;
        self.reconcile_cgroups();
    }

    /// The cgroup2 mount and the attached cgroups' paths: where the cgroup
    /// hooks' senders are named. `None`: no cgroup2 here.
    pub fn hooked_cgroups(&self) -> Option<(CgroupFs, Vec<String>)> {
        let fs = self.coverage.hooks.fs()?.clone();
        Some((fs, self.coverage.hooks.roots()))
    }
}
