//! Criterion benches of the per-request paths of ratewise-core that every layer takes:
//!
//! - `by_host/*`, `by_host_and_route/*`: the key of a request to an already interned host;
//! - `keyed_hit/*`: `KeyedState::with_or_insert` on a key that is already held, on one key and
//!   round-robin over 1 000 keys.
//!
//! Each runs on one thread and on two threads at once (same key function or map, so the shared
//! cache lines bounce between cores); the 2-thread figure is the slower thread's total / iters.
//!
//! Run: `cargo bench -p ratewise-core --bench hot_path -- --warm-up-time 1 --measurement-time 3`
//!
//! On a loaded machine wall time mostly measures the other processes. With `HOT_PATH_CPU=1` the
//! bench instead runs each case a fixed number of times and prints the **CPU time** its threads
//! used per operation (from `/proc/thread-self/stat`, Linux only): time spent descheduled is not
//! counted, cache-line transfers between the two threads are.
//!
//! With `HOT_PATH_CALLGRIND=1` it runs each case [`CALLS`] times through a function that is
//! never inlined (`cg_by_host*`, `cg_by_host_and_route*`, `cg_by_route`, `cg_keyed_hit_*`,
//! `cg_keyed_get`), for counting instructions: under
//! `valgrind --tool=callgrind <bench binary>`, a function's inclusive Ir / [`CALLS`] is the
//! instructions per call (`callgrind_annotate --inclusive=yes`).
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use http::request::Parts;
use ratewise_core::{
    ByHost, ByHostAndRoute, ByRoute, Key, KeyFn, KeyedState, KeyedStateConfig, RouteTable,
};

const KEYS: usize = 1_000;

fn parts(uri: &str) -> Parts {
    http::Request::get(uri).body(()).unwrap().into_parts().0
}

fn key_functions(c: &mut Criterion) {
    let mut group = c.benchmark_group("by_host");
    let by_host = ByHost::new();
    let request = parts("https://api.github.com/repos/rust-lang/rust");
    by_host.key(&request);
    group.bench_function("1_thread", |b| {
        b.iter(|| black_box(by_host.key(black_box(&request))))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(by_host.key(black_box(&request)));
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("by_host_and_route");
    let routes = RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .prefix("/search", "search")
        .unwrap()
        .build();
    let key_fn = ByHostAndRoute::new(routes);
    key_fn.key(&request);
    group.bench_function("1_thread", |b| {
        b.iter(|| black_box(key_fn.key(black_box(&request))))
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(key_fn.key(black_box(&request)));
            })
        })
    });
    group.finish();
}

fn keyed_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed_hit");
    let state: KeyedState<AtomicU64> =
        KeyedState::new(KeyedStateConfig::new().max_keys(2 * KEYS)).unwrap();
    let keys: Vec<Key> = (0..KEYS).map(|i| Key::new(format!("key-{i}"))).collect();
    for key in &keys {
        state.with_or_insert(key, || AtomicU64::new(0), |_| ());
    }
    let hit = |key: &Key| {
        state.with_or_insert(
            key,
            || unreachable!("every key is held"),
            |value| value.load(Ordering::Relaxed),
        )
    };
    let one = &keys[0];
    group.bench_function("one_key/1_thread", |b| {
        b.iter(|| black_box(hit(black_box(one))))
    });
    group.bench_function("one_key/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(hit(black_box(one)));
            })
        })
    });
    let mut next = 0;
    group.bench_function("1000_keys/1_thread", |b| {
        b.iter(|| {
            next = (next + 1) % KEYS;
            black_box(hit(black_box(&keys[next])))
        })
    });
    group.bench_function("1000_keys/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |i| {
                black_box(hit(black_box(&keys[i as usize % KEYS])));
            })
        })
    });
    group.finish();
}

/// Runs `f(i)` for `i in 0..iters` on two threads at once; the slower thread's time.
fn two_threads(iters: u64, f: impl Fn(u64) + Sync) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        f(i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

/// User + system CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux platform Rust supports.
    Duration::from_millis(ticks * 10)
}

/// CPU time per call of `f(i)` over `ops` calls on each of `threads` threads.
fn cpu_per_op(threads: usize, ops: u64, f: impl Fn(u64) + Sync) -> f64 {
    let barrier = std::sync::Barrier::new(threads);
    let total: Duration = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = thread_cpu_time();
                    for i in 0..ops {
                        f(i);
                    }
                    thread_cpu_time() - start
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total.as_nanos() as f64 / (ops * threads as u64) as f64
}

fn cpu_mode() {
    const OPS: u64 = 20_000_000;
    let request = parts("https://api.github.com/repos/rust-lang/rust");
    let by_host = ByHost::new();
    by_host.key(&request);
    let routes = RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .build();
    let by_host_and_route = ByHostAndRoute::new(routes);
    by_host_and_route.key(&request);
    let state: KeyedState<AtomicU64> =
        KeyedState::new(KeyedStateConfig::new().max_keys(2 * KEYS)).unwrap();
    let keys: Vec<Key> = (0..KEYS).map(|i| Key::new(format!("key-{i}"))).collect();
    for key in &keys {
        state.with_or_insert(key, || AtomicU64::new(0), |_| ());
    }
    let hit =
        |key: &Key| state.with_or_insert(key, || unreachable!(), |v| v.load(Ordering::Relaxed));
    for threads in [1, 2] {
        let report = |name: &str, ns: f64| println!("{name}/{threads}_thread(s) {ns:.1} ns CPU/op");
        report(
            "by_host",
            cpu_per_op(threads, OPS, |_| {
                drop(black_box(by_host.key(black_box(&request))))
            }),
        );
        report(
            "by_host_and_route",
            cpu_per_op(threads, OPS, |_| {
                drop(black_box(by_host_and_route.key(black_box(&request))))
            }),
        );
        report(
            "keyed_hit/one_key",
            cpu_per_op(threads, OPS, |_| {
                black_box(hit(black_box(&keys[0])));
            }),
        );
        report(
            "keyed_hit/1000_keys",
            cpu_per_op(threads, OPS, |i| {
                black_box(hit(black_box(&keys[i as usize % KEYS])));
            }),
        );
    }
}

/// Calls per case in the callgrind mode.
const CALLS: u64 = 100_000;

#[inline(never)]
fn cg_by_host(key_fn: &ByHost, request: &Parts) {
    for _ in 0..CALLS {
        drop(black_box(key_fn.key(black_box(request))));
    }
}

/// Two hosts in turn: every call finds its host in the thread's second memo.
#[inline(never)]
fn cg_by_host_two_hosts(key_fn: &ByHost, requests: &[Parts]) {
    by_host_in_turn(key_fn, requests);
}

/// Three hosts in turn: every call misses both memos (the worst case).
#[inline(never)]
fn cg_by_host_three_hosts(key_fn: &ByHost, requests: &[Parts]) {
    by_host_in_turn(key_fn, requests);
}

#[inline(always)]
fn by_host_in_turn(key_fn: &ByHost, requests: &[Parts]) {
    for i in 0..CALLS {
        let request = &requests[i as usize % requests.len()];
        drop(black_box(key_fn.key(black_box(request))));
    }
}

#[inline(never)]
fn cg_by_host_and_route(key_fn: &ByHostAndRoute, request: &Parts) {
    for _ in 0..CALLS {
        drop(black_box(key_fn.key(black_box(request))));
    }
}

/// Unlike `cg_by_host_and_route` (so the linker cannot fold the two): the key function is
/// hidden from the optimizer on every call.
#[inline(never)]
fn cg_by_host_and_route_no_routes(key_fn: &ByHostAndRoute, request: &Parts) {
    for _ in 0..CALLS {
        drop(black_box(black_box(key_fn).key(black_box(request))));
    }
}

#[inline(never)]
fn cg_by_route(key_fn: &ByRoute, requests: &[Parts]) {
    for i in 0..CALLS {
        let request = &requests[i as usize % requests.len()];
        drop(black_box(key_fn.key(black_box(request))));
    }
}

#[inline(never)]
fn cg_keyed_hit_one_key(state: &KeyedState<AtomicU64>, key: &Key) {
    for _ in 0..CALLS {
        black_box(state.with_or_insert(
            black_box(key),
            || unreachable!(),
            |v| v.load(Ordering::Relaxed),
        ));
    }
}

#[inline(never)]
fn cg_keyed_hit_1000_keys(state: &KeyedState<AtomicU64>, keys: &[Key]) {
    for i in 0..CALLS {
        black_box(state.with_or_insert(
            black_box(&keys[i as usize % keys.len()]),
            || unreachable!(),
            |v| v.load(Ordering::Relaxed),
        ));
    }
}

#[inline(never)]
fn cg_keyed_get(state: &KeyedState<AtomicU64>, key: &Key) {
    for _ in 0..CALLS {
        drop(black_box(state.get(black_box(key))));
    }
}

/// GitHub-like routes: a few templates and prefixes, as a real table has.
fn github_routes() -> RouteTable {
    RouteTable::builder()
        .route("/repos/{owner}/{repo}", "repos")
        .unwrap()
        .route("/repos/{owner}/{repo}/issues", "issues")
        .unwrap()
        .route("/repos/{owner}/{repo}/pulls", "pulls")
        .unwrap()
        .prefix("/search", "search")
        .unwrap()
        .route("/graphql", "graphql")
        .unwrap()
        .prefix("/users", "users")
        .unwrap()
        .prefix("/orgs/{org}", "orgs")
        .unwrap()
        .default_bucket("core")
        .build()
}

fn callgrind_mode() {
    let request = parts("https://api.github.com/repos/rust-lang/rust");
    let by_host = ByHost::new();
    by_host.key(&request);
    cg_by_host(&by_host, &request);
    let hosts = [
        parts("https://api.github.com/repos/rust-lang/rust"),
        parts("https://uploads.github.com/repos/rust-lang/rust"),
        parts("https://raw.githubusercontent.com/rust-lang/rust/README.md"),
    ];
    for request in &hosts {
        by_host.key(request);
    }
    cg_by_host_two_hosts(&by_host, &hosts[..2]);
    cg_by_host_three_hosts(&by_host, &hosts);

    let by_host_and_route = ByHostAndRoute::new(github_routes());
    by_host_and_route.key(&request);
    cg_by_host_and_route(&by_host_and_route, &request);
    // The adapt layer's default: no routes.
    let no_routes = ByHostAndRoute::new(RouteTable::default());
    no_routes.key(&request);
    cg_by_host_and_route_no_routes(&no_routes, &request);

    let by_route = ByRoute(github_routes());
    let requests: Vec<Parts> = [
        "https://api.github.com/repos/rust-lang/rust",
        "https://api.github.com/repos/rust-lang/rust/issues?state=open",
        "https://api.github.com/search/code?q=tower",
        "https://api.github.com/graphql",
        "https://api.github.com/user",
        "https://api.github.com/orgs/tokio-rs/repos",
        "https://api.github.com/repos/rust-lang/rust/commits/main",
        "https://api.github.com/",
    ]
    .into_iter()
    .map(parts)
    .collect();
    cg_by_route(&by_route, &requests);

    let state: KeyedState<AtomicU64> =
        KeyedState::new(KeyedStateConfig::new().max_keys(2 * KEYS)).unwrap();
    let keys: Vec<Key> = (0..KEYS).map(|i| Key::new(format!("key-{i}"))).collect();
    for key in &keys {
        state.with_or_insert(key, || AtomicU64::new(0), |_| ());
    }
    cg_keyed_hit_one_key(&state, &keys[0]);
    cg_keyed_hit_1000_keys(&state, &keys);
    cg_keyed_get(&state, &keys[0]);
}

criterion_group!(benches, key_functions, keyed_hit);

fn main() {
    if std::env::var_os("HOT_PATH_CPU").is_some() {
        cpu_mode();
        return;
    }
    if std::env::var_os("HOT_PATH_CALLGRIND").is_some() {
        callgrind_mode();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
