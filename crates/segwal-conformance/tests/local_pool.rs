//! The conformance suite against `LocalWal` with writes and reads on the
//! blocking pool (`writes_in_place(false)`, `reads_in_place(false)`): the
//! other path through the adapter (`tests/local.rs` runs the default, in
//! place on the suite's multi-threaded runtime).

segwal_conformance::conformance_tests!(segwal_conformance::LocalBackend::on_the_blocking_pool());
