//! The streams regions share: their configuration, creation on first
//! write, and the layout check that keeps a prefix's regions where they
//! were written.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{DeleteStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, Stream};

use tokio::time::Instant;

use crate::direct::{self, Failure};
use crate::error::{ClientError, Error, LayoutSnafu};
use crate::wal::{Inner, boxed, lock};

/// Stream metadata: how many streams the prefix has. Regions map to
/// streams by this count, so it must never change under a prefix.
const STREAMS_KEY: &str = "segwal_streams";
/// Stream metadata: the layout version.
const LAYOUT_KEY: &str = "segwal_layout";
const LAYOUT_VERSION: &str = "1";

impl Inner {
    fn stream_config(&self, index: u32) -> stream::Config {
        let metadata = HashMap::from([
            (STREAMS_KEY.to_owned(), self.config.streams.to_string()),
            (LAYOUT_KEY.to_owned(), LAYOUT_VERSION.to_owned()),
        ]);
        stream::Config {
            name: self.config.stream_name(index),
            subjects: vec![self.config.stream_subjects(index)],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            description: Some(format!(
                "segwal: regions R with R mod {} = {index}",
                self.config.streams
            )),
            // Reads are batch direct gets (any current replica answers);
            // group commits are atomic batches.
            allow_direct: true,
            allow_atomic_publish: true,
            metadata,
            ..Default::default()
        }
    }

    fn stream_error(&self, index: u32, operation: &str, source: ClientError) -> Error {
        Error::Stream {
            operation: operation.to_owned(),
            stream: self.config.stream_name(index),
            servers: self.servers.clone(),
            source,
        }
    }

    /// Stream `index`, if it exists; created first if `create` (with
    /// stream 0 before any other, so that the layout check at open sees
    /// every prefix that has data). Refused if its layout differs. One
    /// lookup or creation per stream at a time, retried while the cluster
    /// answers with transient errors.
    pub(crate) async fn stream(&self, index: u32, create: bool) -> Result<Option<Stream>, Error> {
        let cell = Arc::clone(lock(&self.streams).entry(index).or_default());
        if let Some(stream) = cell.get() {
            return Ok(Some(stream.clone()));
        }
        if !create {
            let Some(stream) = self.find_stream(index).await? else {
                return Ok(None);
            };
            self.check_layout(index, &stream)?;
            let _ = cell.set(stream.clone());
            return Ok(Some(stream));
        }
        let stream = cell
            .get_or_try_init(|| async {
                let stream = match self.find_stream(index).await? {
                    Some(stream) => stream,
                    None => {
                        if index != 0 {
                            Box::pin(self.stream(0, true)).await?;
                        }
                        self.create_stream(index).await?
                    }
                };
                self.check_layout(index, &stream)?;
                Ok::<_, Error>(stream)
            })
            .await?;
        Ok(Some(stream.clone()))
    }

    async fn find_stream(&self, index: u32) -> Result<Option<Stream>, Error> {
        let name = self.config.stream_name(index);
        let deadline = Instant::now() + self.config.request_timeout * 3;
        let what = || format!("looking up stream {name}");
        direct::retry(what, deadline, || async {
            match self.js.get_stream(&name).await {
                Ok(stream) => Ok(Some(stream)),
                Err(e) if is_not_found(e.kind()) => Ok(None),
                Err(e) => Err(Failure::Transient(boxed(e))),
            }
        })
        .await
        .map_err(|e| self.stream_error(index, "looking up", e))
    }

    async fn create_stream(&self, index: u32) -> Result<Stream, Error> {
        let deadline = Instant::now() + self.config.request_timeout * 3;
        let what = || format!("creating stream {}", self.config.stream_name(index));
        direct::retry(what, deadline, || async {
            self.js
                .get_or_create_stream(self.stream_config(index))
                .await
                .map_err(|e| Failure::Transient(boxed(e)))
        })
        .await
        .map_err(|e| self.stream_error(index, "creating", e))
    }

    fn check_layout(&self, index: u32, stream: &Stream) -> Result<(), Error> {
        let config = &stream.cached_info().config;
        let found = match (
            config.metadata.get(LAYOUT_KEY),
            config.metadata.get(STREAMS_KEY),
        ) {
            (Some(layout), Some(streams))
                if layout == LAYOUT_VERSION && *streams == self.config.streams.to_string() =>
            {
                return Ok(());
            }
            (Some(layout), Some(streams)) => {
                format!("it was created for {streams} streams (layout {layout})")
            }
            _ => "it has no segwal layout metadata (created by something else, or by a \
                  segwal with a stream per region)"
                .to_owned(),
        };
        LayoutSnafu {
            prefix: self.config.prefix.clone(),
            stream: self.config.stream_name(index),
            configured: self.config.streams,
            found,
        }
        .fail()
    }

    /// Every stream of this prefix that exists.
    pub(crate) async fn existing_streams(&self) -> Result<Vec<Stream>, Error> {
        let mut found = Vec::new();
        for index in 0..self.config.streams {
            if let Some(stream) = self.stream(index, false).await? {
                found.push(stream);
            }
        }
        Ok(found)
    }

    /// Deletes every stream of this prefix; how many there were.
    pub(crate) async fn delete_streams(&self) -> Result<usize, Error> {
        let mut deleted = 0;
        for index in 0..self.config.streams {
            let name = self.config.stream_name(index);
            match self.js.delete_stream(&name).await {
                Ok(_) => deleted += 1,
                Err(e) if matches!(e.kind(), DeleteStreamErrorKind::JetStream(ref js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                    {}
                Err(e) => return Err(self.stream_error(index, "deleting", boxed(e))),
            }
            lock(&self.streams).remove(&index);
        }
        Ok(deleted)
    }
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(ref js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
