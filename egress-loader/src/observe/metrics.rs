//! Prometheus metrics: `run --metrics-addr ADDR` serves `/metrics` (the
//! OpenMetrics text format) read from the pinned maps on every scrape, so
//! the numbers are always the kernel's, the same ones `counters` prints.
//!
//! ```text
//! egress_packets_total{verdict,interface}    per bridge (IFACE_SLOTS, IFACE_COUNTERS); a gone
//! egress_bytes_total{verdict,interface}      interface keeps its counts as "ifindex N"
//! egress_endpoint_packets_total{verdict,veth,container}  per live endpoint (ENDPOINT_COUNTERS)
//! egress_endpoint_bytes_total{verdict,veth,container}
//! egress_host_packets_total{verdict}         every interface together (COUNTERS):
//! egress_host_bytes_total{verdict}           what `counters --json` prints
//! egress_rule_packets_total{rule}            drops per blocked destination
//! egress_rule_bytes_total{rule}
//! egress_events_lost_total                   drop events lost (ring buffer full)
//! egress_events_suppressed_total             ... and over the in-kernel budget
//! egress_rejects_total{reply}                rejected packets: sent | suppressed | refused | unanswerable
//! egress_attached_interfaces                 interfaces the filter runs on
//! egress_cgroup_attached{cgroup}             1 per cgroup whose cgroup hooks are attached
//! egress_uncovered_containers                running containers no hook sees (with an engine)
//! egress_uncovered_networks                  engine networks the filter does not see
//! egress_partly_covered_containers{reason}   running containers filtered with a door open: af_packet
//! egress_hook_decisions_total{verdict,hook}  the cgroup hooks' decisions (HOOK_COUNTERS)
//! egress_interface_attached{interface}       1 per interface `run` attached (0: link gone)
//! egress_dry_run                             1 in dry-run (nothing dropped)
//! egress_loader_healthy                      1 while every pinned map reads back
//! egress_loader_start_time_seconds
//! egress_loader_build_info{version}
//! egress_docker_engine_connected             with container identity (not --no-docker)
//! egress_docker_known_addresses
//! egress_config_reloads_total{result}        ok | refused (SIGHUP, reload, file changes)
//! egress_config_generation                   1 at start, +1 per applied reload
//! egress_config_info{path,sha256}            the file and version in force
//! egress_config_applied_timestamp_seconds
//! ```

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, info, warn};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    endpoint::{
        coverage::{Coverage, SharedCoverage},
        engine::DockerIdentity,
    },
    error::Error,
    kernel::{
        attach::{self, AttachMode},
        cgroup::{self as kcgroup, CgroupFs},
        pins::PinDir,
    },
    observe::{
        config_record::SharedRecord,
        counters::{self, NamedCounter, RuleCounter},
    },
};

/// `Content-Type` of the OpenMetrics text format (Prometheus 2.5+ asks for it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Interfaces `run` has attached to (name -> ifindex), shared with the scrapes.
pub type Attached = Arc<RwLock<BTreeMap<String, u32>>>;

/// What a scrape reads besides the pins.
#[derive(Debug)]
pub struct MetricsSource {
    pub pins: PinDir,
    pub mode: AttachMode,
    pub attached: Attached,
    pub docker: Option<Arc<DockerIdentity>>,
    pub started: SystemTime,
    /// The configuration in force and the reload counts.
    pub config: Option<SharedRecord>,
    /// Coverage as `run` follows it (with an engine).
    pub coverage: Option<SharedCoverage>,
    /// The cgroup2 mount, to check the cgroup hooks' links.
    pub cgroups: Option<CgroupFs>,
}

#[derive(Debug)]
struct FilterCollector(Arc<MetricsSource>);

impl MetricsSource {
    /// (interface, attached now) for every interface `run` attached to.
    fn attached_now(&self) -> Vec<(String, bool)> {
        let names: Vec<String> = self
            .attached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .map(|name| {
                // A TCX link is checked in the kernel; a legacy filter leaves
                // no pin to check, so the loader's word stands.
                let live = match self.mode.resolve() {
                    AttachMode::Netlink => true,
                    _ => attach::live_pinned_link(&self.pins, &name).is_some(),
                };
                (name, live)
            })
            .collect()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<N: EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Vec<(&str, String)>, N)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn single<T>(value: T) -> [(Vec<(&'static str, String)>, T); 1] {
    [(Vec::new(), value)]
}

impl Collector for FilterCollector {
    /// The families in a fixed order: the loader itself, what it covers,
    /// the configuration, the engine, then the kernel's counters (left out
    /// when the pinned maps cannot be read).
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let src = &self.0;
        // Every scrape reads the kernel's maps afresh; a failure leaves the
        // loader unhealthy and the counter families out.
        let reading = counters::read(&src.pins);
        if let Err(e) = &reading {
            debug!("metrics: reading the pinned maps: {e}");
        }
        let e = &mut encoder;
        encode_loader(e, src, reading.is_ok())?;
        encode_coverage(e, src)?;
        if let Some(config) = &src.config {
            encode_config(e, config)?;
        }
        if let Some(docker) = &src.docker {
            encode_engine(e, docker)?;
        }
        match reading {
            Ok(s) => encode_counters(e, &s),
            Err(_) => Ok(()),
        }
    }
}

/// The loader's health, start time and version.
fn encode_loader(
    e: &mut DescriptorEncoder,
    src: &MetricsSource,
    healthy: bool,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "egress_loader_healthy",
        "1 while the loader runs and every pinned map reads back, 0 when they cannot be read",
        &single(i64::from(healthy)),
    )?;
    let started = src
        .started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    gauge(
        e,
        "egress_loader_start_time_seconds",
        "When this loader started, in seconds since the Unix epoch",
        &single(started),
    )?;
    gauge(
        e,
        "egress_loader_build_info",
        "The loader's version, as a label",
        &[(
            vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
            1i64,
        )],
    )?;
    Ok(())
}

/// The interfaces and cgroups the filter runs on, and what no hook sees.
fn encode_coverage(e: &mut DescriptorEncoder, src: &MetricsSource) -> Result<(), std::fmt::Error> {
    let attached = src.attached_now();
    gauge(
        e,
        "egress_attached_interfaces",
        "Interfaces whose ingress runs the filter",
        &single(attached.iter().filter(|(_, live)| *live).count() as i64),
    )?;
    let per_iface: Vec<_> = attached
        .iter()
        .map(|(n, live)| (vec![("interface", n.clone())], i64::from(*live)))
        .collect();
    gauge(
        e,
        "egress_interface_attached",
        "1 for each interface the loader attached to while the filter runs there, 0 once its link is gone",
        &per_iface,
    )?;
    let cgroups = kcgroup::attachments(&src.pins, src.cgroups.as_ref());
    gauge(
        e,
        "egress_cgroup_attached",
        "1 for each cgroup whose cgroup hooks are all attached (host-network containers below it are judged), 0 when a link is gone",
        &cgroups
            .iter()
            .map(|a| {
                (
                    vec![("cgroup", format!("/{}", a.cgroup))],
                    i64::from(a.stale.is_empty() && !a.live.is_empty()),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    if let Some(cov) = &src.coverage {
        let cov = cov.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(cov) = cov {
            gauge(
                e,
                "egress_uncovered_containers",
                "Running containers no hook of the filter sees (macvlan, ipvlan, a host-network container outside the attached cgroups...): egress-loader status names them",
                &single(cov.uncovered_containers as i64),
            )?;
            gauge(
                e,
                "egress_uncovered_networks",
                "Engine networks whose containers the filter does not see (macvlan, ipvlan, a bridge not attached)",
                &single(cov.uncovered_networks as i64),
            )?;
            gauge(
                e,
                "egress_partly_covered_containers",
                "Running containers a hook filters but with a door open, by reason (af_packet: host network with CAP_NET_RAW, whose AF_PACKET sockets pass the cgroup hooks): egress-loader status names them",
                &partly_covered(&cov),
            )?;
        }
    }
    Ok(())
}

/// `egress_partly_covered_containers{reason}`: every reason, 0 included.
fn partly_covered(cov: &Coverage) -> Vec<(Vec<(&'static str, String)>, i64)> {
    cov.partly_covered_by_gap()
        .into_iter()
        .map(|(g, n)| (vec![("reason", g.name().to_owned())], n as i64))
        .collect()
}

/// The configuration in force and its reloads.
fn encode_config(e: &mut DescriptorEncoder, config: &SharedRecord) -> Result<(), std::fmt::Error> {
    let r = config.read().unwrap_or_else(|e| e.into_inner()).clone();
    counter(
        e,
        "egress_config_reloads",
        "Configuration reloads (SIGHUP, egress-loader reload, the file changing), applied or refused",
        &[
            (vec![("result", "ok".to_owned())], r.reloads_ok),
            (vec![("result", "refused".to_owned())], r.reloads_refused),
        ],
    )?;
    gauge(
        e,
        "egress_config_generation",
        "Version of the policy in force: 1 at start, one more per applied reload",
        &single(r.generation as i64),
    )?;
    gauge(
        e,
        "egress_config_info",
        "The configuration in force: its file (\"\" for defaults and flags) and the SHA-256 of its bytes",
        &[(
            vec![
                ("path", r.path.clone().unwrap_or_default()),
                ("sha256", r.sha256.clone().unwrap_or_default()),
            ],
            1i64,
        )],
    )?;
    gauge(
        e,
        "egress_config_applied_timestamp_seconds",
        "When the policy in force was applied, in seconds since the Unix epoch",
        &single(r.applied_at as i64),
    )?;
    Ok(())
}

/// The container engine that names senders.
fn encode_engine(
    e: &mut DescriptorEncoder,
    docker: &DockerIdentity,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "egress_docker_engine_connected",
        "1 while the Docker engine is followed (drop events name containers), 0 otherwise",
        &single(i64::from(docker.is_connected())),
    )?;
    gauge(
        e,
        "egress_docker_known_addresses",
        "Container addresses known from the Docker engine",
        &single(docker.known_addresses() as i64),
    )?;
    Ok(())
}

/// The kernel's counters, as `counters` prints them.
fn encode_counters(
    e: &mut DescriptorEncoder,
    s: &counters::Snapshot,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "egress_dry_run",
        "1 in dry-run (every match counted, nothing dropped), 0 when enforcing",
        &single(i64::from(s.dry_run)),
    )?;
    let host = |f: fn(&NamedCounter) -> u64| -> Vec<_> {
        s.counters
            .iter()
            .map(|c| (vec![("verdict", c.name.to_owned())], f(c)))
            .collect()
    };
    counter(
        e,
        "egress_host_packets",
        "Packets per verdict on every filtered interface together (egress-loader counters)",
        &host(|c| c.packets),
    )?;
    counter(
        e,
        "egress_host_bytes",
        "Bytes per verdict on every filtered interface together (egress-loader counters)",
        &host(|c| c.bytes),
    )?;
    let iface = |f: fn(&NamedCounter) -> u64| -> Vec<_> {
        s.interfaces
            .iter()
            .flat_map(|i| {
                i.counters.iter().map(|c| {
                    (
                        vec![
                            ("verdict", c.name.to_owned()),
                            ("interface", i.interface.clone()),
                        ],
                        f(c),
                    )
                })
            })
            .collect()
    };
    counter(
        e,
        "egress_packets",
        "Packets per verdict and interface (the bridge whose ingress saw them; \"ifindex N\" once it is gone)",
        &iface(|c| c.packets),
    )?;
    counter(
        e,
        "egress_bytes",
        "Bytes per verdict and interface (the bridge whose ingress saw them; \"ifindex N\" once it is gone)",
        &iface(|c| c.bytes),
    )?;
    // Per endpoint: the live ones only (a gone container's series end).
    let endpoint = |f: fn(&NamedCounter) -> u64| -> Vec<_> {
        s.endpoints
            .iter()
            .flat_map(|ep| {
                let container = ep
                    .endpoint
                    .container
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                ep.counters.iter().map(move |c| {
                    (
                        vec![
                            ("verdict", c.name.to_owned()),
                            ("veth", ep.endpoint.veth.clone()),
                            ("container", container.clone()),
                        ],
                        f(c),
                    )
                })
            })
            .collect()
    };
    counter(
        e,
        "egress_endpoint_packets",
        "Packets per verdict and endpoint (a container's veth; container \"\" when no engine named it); containers that are gone are dropped",
        &endpoint(|c| c.packets),
    )?;
    counter(
        e,
        "egress_endpoint_bytes",
        "Bytes per verdict and endpoint (a container's veth)",
        &endpoint(|c| c.bytes),
    )?;
    let rules = |f: fn(&RuleCounter) -> u64| -> Vec<_> {
        s.rules
            .iter()
            .map(|r| (vec![("rule", r.destination.clone())], f(r)))
            .collect()
    };
    let hooks = |f: fn(&NamedCounter) -> u64| -> Vec<_> {
        s.hooks
            .iter()
            .flat_map(|h| {
                h.counters.iter().map(|c| {
                    (
                        vec![("verdict", c.name.to_owned()), ("hook", h.hook.to_owned())],
                        f(c),
                    )
                })
            })
            .collect()
    };
    counter(
        e,
        "egress_hook_decisions",
        "Decisions per verdict of each cgroup hook (host-network containers): calls of connect, packets of cgroup_skb",
        &hooks(|c| c.packets),
    )?;
    counter(
        e,
        "egress_rule_packets",
        "Packets that matched each blocked destination",
        &rules(|r| r.packets),
    )?;
    counter(
        e,
        "egress_rule_bytes",
        "Bytes that matched each blocked destination",
        &rules(|r| r.bytes),
    )?;
    counter(
        e,
        "egress_events_lost",
        "Drop events lost because the ring buffer was full",
        &single(s.events.lost),
    )?;
    counter(
        e,
        "egress_events_suppressed",
        "Drop events not reported because they exceeded the in-kernel event budget",
        &single(s.events.suppressed),
    )?;
    let rejects: Vec<_> = egress_ebpf_common::reply::ReplyOutcome::ALL
        .into_iter()
        .map(|o| (vec![("reply", o.name().to_string())], s.replies.get(o)))
        .collect();
    counter(
        e,
        "egress_rejects",
        "Packets a rejecting rule matched, by what became of the reply: sent, suppressed (over the reply budget), refused (no single sender to answer), unanswerable",
        &rejects,
    )?;
    Ok(())
}

/// The registry every scrape encodes.
pub fn registry(source: Arc<MetricsSource>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FilterCollector(source)));
    registry
}

/// One scrape's text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Binds before anything in the kernel changes, so a busy port is reported
/// up front.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("--metrics-addr {addr}: cannot listen: {e}"),
        ))
    })
}

/// Serves `/metrics` (and `/healthz`) until the runtime stops.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    match listener.local_addr() {
        Ok(a) => info!("metrics: http://{a}/metrics"),
        Err(e) => warn!("metrics listener: {e}"),
    }
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(req, registry).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("metrics connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn respond<B>(req: Request<B>, registry: Arc<Registry>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            // Map reads are syscalls: keep them off the event loop.
            match tokio::task::spawn_blocking(move || render(&registry)).await {
                Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    format!("scrape failed: {e}\n"),
                ),
            }
        }
        "/healthz" => {
            let body = tokio::task::spawn_blocking(move || render(&registry))
                .await
                .unwrap_or_default();
            if body.contains("\negress_loader_healthy 1\n") {
                text(StatusCode::OK, PLAIN, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "the pinned maps cannot be read\n".into(),
                )
            }
        }
        "/" => text(
            StatusCode::OK,
            PLAIN,
            "egress-loader: /metrics (Prometheus, OpenMetrics text), /healthz\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_pins_report_unhealthy() {
        let source = Arc::new(MetricsSource {
            pins: PinDir::new("/nonexistent/egress"),
            mode: AttachMode::Tcx,
            attached: Attached::default(),
            docker: None,
            started: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            config: Some(Arc::new(RwLock::new(
                crate::observe::config_record::ConfigRecord::new(
                    std::path::Path::new("/nonexistent/egress"),
                    Some(std::path::Path::new("/etc/egress-filter/config.toml")),
                    Some("ab12".into()),
                    true,
                ),
            ))),
            coverage: None,
            cgroups: None,
        });
        let text = render(&registry(source));
        assert!(text.contains("\negress_loader_healthy 0\n"), "{text}");
        assert!(
            text.contains("egress_loader_start_time_seconds 1700000000"),
            "{text}"
        );
        assert!(text.contains("egress_attached_interfaces 0"), "{text}");
        // The configuration is known without the maps.
        assert!(
            text.contains("egress_config_reloads_total{result=\"ok\"} 0\n")
                && text.contains("egress_config_reloads_total{result=\"refused\"} 0\n")
                && text.contains("egress_config_generation 1\n")
                && text.contains(
                    "egress_config_info{path=\"/etc/egress-filter/config.toml\",sha256=\"ab12\"} 1\n"
                ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // No counter families without a reading.
        assert!(!text.contains("egress_host_packets_total"), "{text}");
    }

    /// A host-network container with CAP_NET_RAW is counted partly covered
    /// (af_packet), never folded into the covered ones; without it, 0.
    #[test]
    fn partly_covered_containers_by_reason() {
        use crate::endpoint::coverage::{ContainerCoverage, Gap, HookKind};
        let scrape = |gaps: Vec<Gap>| {
            let cov = Coverage {
                containers: vec![ContainerCoverage {
                    name: "agent".into(),
                    id: "0123456789ab".into(),
                    network_mode: "host".into(),
                    networks: vec![],
                    hook: HookKind::Cgroup,
                    via: vec!["/docker".into()],
                    reason: None,
                    caveats: vec![],
                    partly_covered: gaps,
                }],
                ..Coverage::default()
            };
            render(&registry(Arc::new(MetricsSource {
                pins: PinDir::new("/nonexistent/egress"),
                mode: AttachMode::Tcx,
                attached: Attached::default(),
                docker: None,
                started: UNIX_EPOCH,
                config: None,
                coverage: Some(Arc::new(RwLock::new(Some(cov)))),
                cgroups: None,
            })))
        };
        let text = scrape(vec![Gap::AfPacket]);
        assert!(
            text.contains("\negress_partly_covered_containers{reason=\"af_packet\"} 1\n"),
            "{text}"
        );
        let text = scrape(vec![]);
        assert!(
            text.contains("\negress_partly_covered_containers{reason=\"af_packet\"} 0\n"),
            "{text}"
        );
    }
}
