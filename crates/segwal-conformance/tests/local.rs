//! The conformance suite against `LocalWal`: the same cases the NATS
//! backend runs (`crates/segwal-nats/tests/conformance.rs`). The suite's
//! runtime is multi-threaded, so writes and reads run in place (the
//! default); `tests/local_pool.rs` runs it on the blocking pool.

segwal_conformance::conformance_tests!(segwal_conformance::LocalBackend::create());
