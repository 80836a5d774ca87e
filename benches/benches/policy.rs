//! Cedar decision latency, one `invoke` decision (both `invoke` and
//! `invoke_unattended` evaluated when permitted), the context built from
//! typed facts:
//!
//! - 20 policies, all in the agent's slice;
//! - 2,000 policies scoped one per agent (`principal == Agent::"agent-i"`),
//!   plus a baseline permit: the slice holds 3;
//! - 2,000 unscoped policies: every one is in every slice (the worst case,
//!   what an unsliced evaluation costs).
//!
//! Before criterion runs, each case is timed call by call (20,000 decisions)
//! and its median and p99 are printed.
//!
//! `cargo bench -p warden-benches --bench policy`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use warden_policy::cedar::{CallFacts, Policies, SessionFacts, Usage};
use warden_policy::{Classification, Effect};

fn facts(agent: &str) -> CallFacts {
    CallFacts {
        tenant: "acme".into(),
        env: "production".into(),
        agent: agent.into(),
        tool: "notes".into(),
        version: "1.0.0".into(),
        action: "write".into(),
        effect: Effect::Write,
        classification: Classification::Internal,
        sends_to: None,
        args: serde_json::json!({ "path": "notes/a.txt", "text": "hello", "amount": 5 }),
        now: 1_763_800_000,
        usage: Usage {
            minute: 3,
            hour: 10,
            day: 40,
            writes_today: 12,
            fuel_today: 1_000_000,
        },
        session: SessionFacts {
            id: "s-1".into(),
            tier: Some(Classification::Internal),
            calls: 4,
            tools: vec!["notes/read".into()],
        },
    }
}

/// A realistic rule: a condition on the context, the arguments and the
/// resource.
fn rule(i: usize, scope: &str) -> String {
    format!(
        "@id(\"p{i}\")\nforbid({scope}, action == Warden::Action::\"invoke\", resource) when {{ context.counters.minute > {limit} && context.args.hasTag(\"path\") && context.args.getTag(\"path\") like \"secret/{i}/*\" }};\n",
        limit = 100 + i
    )
}

fn sets() -> Vec<(&'static str, Policies, &'static str)> {
    let baseline = "@id(\"baseline\") permit(principal, action, resource);\n";
    let mut twenty = String::from(baseline);
    for i in 0..19 {
        twenty.push_str(&rule(i, "principal"));
    }
    let mut scoped = String::from(baseline);
    for i in 0..2000 {
        scoped.push_str(&rule(
            i,
            &format!("principal == Warden::Agent::\"agent-{}\"", i % 1000),
        ));
    }
    let mut unscoped = String::from(baseline);
    for i in 0..1999 {
        unscoped.push_str(&rule(i, "principal"));
    }
    vec![
        (
            "20 policies",
            Policies::compile(&twenty, 1).expect("20"),
            "agent-7",
        ),
        (
            "2000 policies, sliced by agent",
            Policies::compile(&scoped, 1).expect("2000 scoped"),
            "agent-7",
        ),
        (
            "2000 unscoped policies",
            Policies::compile(&unscoped, 1).expect("2000 unscoped"),
            "agent-7",
        ),
    ]
}

fn percentiles(name: &str, p: &Policies, agent: &str) {
    let f = facts(agent);
    for _ in 0..200 {
        black_box(p.decide(&f, None));
    }
    let n = if p.len() > 1000 && name.contains("unscoped") {
        2_000
    } else {
        20_000
    };
    let mut t: Vec<u128> = (0..n)
        .map(|_| {
            let s = Instant::now();
            black_box(p.decide(&f, None));
            s.elapsed().as_nanos()
        })
        .collect();
    t.sort_unstable();
    let q = |x: f64| t[((t.len() as f64 * x) as usize).min(t.len() - 1)] as f64 / 1000.0;
    println!(
        "{name}: median {:.1} µs, p99 {:.1} µs ({n} decisions)",
        q(0.5),
        q(0.99)
    );
}

fn decision(c: &mut Criterion) {
    let sets = sets();
    for (name, p, agent) in &sets {
        assert_eq!(p.decide(&facts(agent), None).name(), "allow", "{name}");
        percentiles(name, p, agent);
    }
    let mut g = c.benchmark_group("policy_decision");
    for (name, p, agent) in &sets {
        let f = facts(agent);
        g.bench_function(*name, |b| b.iter(|| black_box(p.decide(&f, None))));
    }
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
