//! The planner at scale (criterion): 10,000 pushed routes against 200 bridge networks and a
//! 100,000-route main table (`full`), and a tenth of that (`small`), from the synthetic host of
//! `scripts/bench/synth.rs`. The target: `plan/full` in 50 ms or less.
//!
//! `cargo bench --bench plan` runs it; `scripts/bench/run.sh` runs it among the other comparisons.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[path = "../scripts/bench/synth.rs"]
mod synth;

fn plan(c: &mut Criterion) {
    for (name, scale) in [("small", synth::SMALL), ("full", synth::FULL)] {
        let s = synth::synth(scale, 1);
        let p = vpnfix::plan::plan(&s.facts, &s.config);
        eprintln!(
            "plan/{name}: {} pushes, {} routes in the table, {} Docker networks -> {} routes to add, {} conflicts",
            s.facts.pushes.len(),
            s.facts.routes.len(),
            s.inspects.len(),
            p.add.len(),
            p.conflicts.len()
        );
        c.bench_function(&format!("plan/{name}"), |b| b.iter(|| vpnfix::plan::plan(black_box(&s.facts), &s.config)));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = plan
}
criterion_main!(benches);
