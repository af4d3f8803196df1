//! Criterion benches of ratewise-pace (filled in later).
fn main() {}
