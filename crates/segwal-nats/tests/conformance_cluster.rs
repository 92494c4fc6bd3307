//! The conformance suite against `NatsWal` on a real 3-node cluster (one
//! per case, one case at a time), R3, every node with
//! `sync_interval: always`: the same cases `LocalWal` runs.

mod support;

segwal_conformance::conformance_tests!(support::NatsBackend::cluster());
