//! HoraeDB's WAL test scenarios (its `src/wal/tests/read_write.rs`),
//! ported to segwal to prove that code written against HoraeDB's `wal`
//! crate ports by changing its imports: see `tests/read_write.rs`; and
//! `tests/engine_shapes.rs`, the ways HoraeDB's analytic engine uses its
//! WAL (configuration, set-up, payloads, replay, manifest). Both run
//! against `LocalWal` and against `NatsWal` on real `nats-server`
//! processes (`cargo xtask test` provisions the binary).
//!
//! The scenarios also use two of HoraeDB's other crates, which are not part
//! of its WAL and which an engine keeps when it moves to segwal. This
//! crate stands in for the few items the scenarios take from them, under
//! the same paths: [`common_types`] and [`runtime`].

#![forbid(unsafe_code)]

/// What the scenarios use of HoraeDB's `common_types` crate.
pub mod common_types {
    pub use segwal::SequenceNumber;

    /// `common_types::table`.
    pub mod table {
        pub use segwal::TableId;

        /// The shard (segwal's region) a table belongs to unless it is
        /// assigned one, as in HoraeDB.
        pub const DEFAULT_SHARD_ID: u32 = 0;
    }
}

/// What the scenarios use of HoraeDB's `runtime` crate: building a
/// multi-threaded tokio runtime, with the same calls.
pub mod runtime {
    /// A tokio runtime (HoraeDB's `Runtime` wraps one; the scenarios call
    /// only `block_on` and `spawn`, which tokio's has).
    pub type Runtime = tokio::runtime::Runtime;

    /// Builds a multi-threaded [`Runtime`].
    #[derive(Debug)]
    pub struct Builder {
        inner: tokio::runtime::Builder,
    }

    impl Default for Builder {
        fn default() -> Self {
            Builder {
                inner: tokio::runtime::Builder::new_multi_thread(),
            }
        }
    }

    impl Builder {
        /// How many worker threads the runtime has.
        pub fn worker_threads(&mut self, threads: usize) -> &mut Self {
            self.inner.worker_threads(threads);
            self
        }

        /// Turns on tokio's I/O and time drivers.
        pub fn enable_all(&mut self) -> &mut Self {
            self.inner.enable_all();
            self
        }

        /// The runtime.
        pub fn build(&mut self) -> std::io::Result<Runtime> {
            self.inner.build()
        }
    }
}
