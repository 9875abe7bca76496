//! rtnetlink: link events (so a new bridge is filtered as it appears, not at
//! the next rescan) and the legacy tc filters on an interface (for `status`
//! when attached with `--attach-mode netlink`, which leaves no pin).

use futures::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
use netlink_sys::{AsyncSocket, SocketAddr};
use rtnetlink::constants::RTMGRP_LINK;

/// A stream that yields once per link change (new, changed or deleted
/// interface) in this network namespace. `None` if netlink is unavailable;
/// the periodic rescan still covers that case.
pub fn link_events() -> Option<impl Stream<Item = ()> + Unpin> {
    let (mut conn, _handle, messages) = rtnetlink::new_connection().ok()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .ok()?;
    tokio::spawn(conn);
    Some(messages.map(|_| ()))
}

/// A legacy (clsact) bpf filter on an interface's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyFilter {
    pub program_name: String,
    pub program_id: u32,
}

/// The bpf filters on `ifindex`'s clsact ingress.
pub async fn legacy_ingress_filters(ifindex: u32) -> Vec<LegacyFilter> {
    let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
        return Vec::new();
    };
    tokio::spawn(conn);
    let mut out = Vec::new();
    let mut filters = handle
        .traffic_filter(ifindex as i32)
        .get()
        .ingress()
        .execute();
    while let Ok(Some(msg)) = filters.try_next().await {
        let mut f = LegacyFilter {
            program_name: String::new(),
            program_id: 0,
        };
        for attr in &msg.attributes {
            if let TcAttribute::Options(opts) = attr {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.program_name = n.clone(),
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => f.program_id = *id,
                        _ => {}
                    }
                }
            }
        }
        if f.program_id != 0 {
            out.push(f);
        }
    }
    out
}
