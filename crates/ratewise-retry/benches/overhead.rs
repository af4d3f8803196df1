//! Overhead of the retry layer on the no-retry path (the inner service answers 200 at once),
//! against tower-resilience's retry layer and tower's bare `Retry`, in the same run.
//!
//! `cargo bench -p ratewise-retry --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! On a noisy machine, `benches/instructions.rs` gives deterministic instruction counts.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

fn overhead(c: &mut Criterion) {
    let template = common::request();
    let mut group = c.benchmark_group("retry_no_retry_path");
    group.bench_function("baseline_no_layer", |b| {
        b.iter(|| common::send(&mut common::Upstream, black_box(template.clone())));
    });
    group.bench_function("ratewise_retry", |b| {
        let mut service = common::ratewise();
        b.iter(|| common::send(&mut service, black_box(template.clone())));
    });
    group.bench_function("tower_retry_floor", |b| {
        let mut service = common::tower_floor();
        b.iter(|| common::send(&mut service, black_box(template.clone())));
    });
    group.bench_function("tower_resilience_retry", |b| {
        let mut service = common::tower_resilience();
        b.iter(|| common::send(&mut service, black_box(template.clone())));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = overhead
}
criterion_main!(benches);
