//! Criterion benches for strata live in `benches/benches/`.
