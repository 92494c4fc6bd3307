//! The conformance suite against `NatsWal` on a real single `nats-server`
//! (one per case): the same cases `LocalWal` runs
//! (`crates/segwal-conformance/tests/local.rs`).

mod support;

segwal_conformance::conformance_tests!(support::NatsBackend::single());
