//! Prometheus metrics at `/metrics`: calls by tool and outcome, denials by
//! tool, tenant and reason, call latency, fuel used, calls in flight.
//!
//! Labels are kept low-cardinality: tool and tenant names, outcome kinds and
//! guard rule names, never inputs or free text.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warden_runtime::{Outcome, Report};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    tool: String,
    tenant: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: String,
    status: String,
}

type HistogramFamily = Family<ToolLabels, Histogram, fn() -> Histogram>;

/// Every metric Warden exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    latency: HistogramFamily,
    fuel: HistogramFamily,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
}

fn latency_histogram() -> Histogram {
    // 20 µs .. ~20 s.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 21))
}

fn fuel_histogram() -> Histogram {
    // 1k .. ~100G fuel units.
    Histogram::new(exponential_buckets(1_000.0, 4.0, 14))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("warden");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Tool calls by tool and outcome", calls.clone());
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Calls refused or denied, by tool, tenant and reason",
            denials.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "call_duration_seconds",
            "Time from an agent's request to its answer, by tool",
            latency.clone(),
        );
        let fuel: HistogramFamily = Family::new_with_constructor(fuel_histogram);
        registry.register("fuel_used", "Fuel used per call, by tool", fuel.clone());
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "RPC requests by transport and status class",
            requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "calls_in_flight",
            "Wasm calls running now",
            in_flight.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            calls,
            denials,
            latency,
            fuel,
            requests,
            in_flight,
        }
    }
}

impl Metrics {
    /// Records one finished call.
    pub fn call(&self, tenant: &str, report: &Report, seconds: f64) {
        let tool = report.tool.clone();
        self.calls
            .get_or_create(&CallLabels {
                tool: tool.clone(),
                outcome: report.outcome.kind().to_owned(),
            })
            .inc();
        let reason = match &report.outcome {
            Outcome::Denied { rule, .. } | Outcome::Held { rule, .. } => Some(rule.clone()),
            Outcome::NotGranted { .. } => Some("not_granted".to_owned()),
            _ => None,
        };
        if let Some(reason) = reason {
            self.denials
                .get_or_create(&DenialLabels {
                    tool: tool.clone(),
                    tenant: tenant.to_owned(),
                    reason,
                })
                .inc();
        }
        let labels = ToolLabels { tool };
        self.latency.get_or_create(&labels).observe(seconds);
        #[allow(clippy::cast_precision_loss)]
        self.fuel
            .get_or_create(&labels)
            .observe(report.fuel_used as f64);
    }

    /// Records one RPC request's status.
    pub fn request(&self, transport: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                transport: transport.to_owned(),
                status: format!("{}xx", status / 100),
            })
            .inc();
    }

    /// The text exposition, with the in-flight gauge set to `in_flight`.
    /// The text exposition with the approval figures added.
    pub fn render_with(
        &self,
        in_flight: usize,
        approvals: &warden_service::approvals::ApprovalStats,
    ) -> String {
        use std::fmt::Write as _;
        let out = self.render(in_flight);
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out);
        let mut extra = String::new();
        let _ = writeln!(
            extra,
            "# HELP warden_approvals_pending Held calls waiting for approvers.\n# TYPE warden_approvals_pending gauge\nwarden_approvals_pending {}",
            approvals.pending
        );
        let _ = writeln!(
            extra,
            "# HELP warden_approval_transitions Approval state changes (requested, approved, rejected, expired, cancelled, executed...).\n# TYPE warden_approval_transitions counter"
        );
        for (outcome, n) in &approvals.decisions {
            let _ = writeln!(
                extra,
                "warden_approval_transitions_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            extra,
            "# HELP warden_approval_decision_seconds Time from hold to approval or rejection.\n# TYPE warden_approval_decision_seconds summary\nwarden_approval_decision_seconds_sum {}\nwarden_approval_decision_seconds_count {}",
            approvals.decide_seconds_sum, approvals.decide_count
        );
        format!("{body}{extra}# EOF\n")
    }

    pub fn render(&self, in_flight: usize) -> String {
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}
