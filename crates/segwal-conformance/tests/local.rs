//! The conformance suite against `LocalWal`: the same cases the NATS
//! backend runs (`crates/segwal-nats/tests/conformance.rs`).

segwal_conformance::conformance_tests!(segwal_conformance::LocalBackend::create());
