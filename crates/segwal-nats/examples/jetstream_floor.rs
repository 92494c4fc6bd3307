//! The floor under `segwal bench --backend nats`: what the JetStream
//! cluster itself does with the bench's write pattern, with no segwal in
//! between. Writers publish one message per write, each waiting for its
//! acknowledgement, to a stream like the one `NatsWal` writes (every region
//! in one stream, a subject per region and table), fenced as `NatsWal`
//! fences (`Nats-Expected-Last-Subject-Sequence` over the region's
//! subjects) unless `--unfenced`. Each writer owns the regions `r` with
//! `r % writers == w` and writes them in turn. The stream is deleted at the
//! end.
//!
//! ```sh
//! cargo run --release -p segwal-nats --example jetstream_floor -- \
//!     --servers nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224 \
//!     [--writers 8] [--regions 64] [--bytes 4200] [--seconds 10] [--replicas 3] [--unfenced]
//! ```
//!
//! `--bytes 4200` is the size of a `NatsWal` message holding one batch of
//! 4 x 1 KiB entries (the bench's default batch).

use std::io::Write;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

/// The header naming the subjects the expected last sequence is checked
/// over (nats-server 2.11+).
const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

struct Options {
    servers: String,
    writers: usize,
    regions: usize,
    bytes: usize,
    seconds: u64,
    replicas: usize,
    fenced: bool,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        servers: String::new(),
        writers: 8,
        regions: 64,
        bytes: 4200,
        seconds: 10,
        replicas: 3,
        fenced: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--unfenced" {
            options.fenced = false;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--servers" => options.servers = value.clone(),
            "--writers" => options.writers = number()?.max(1),
            "--regions" => options.regions = number()?.max(1),
            "--bytes" => options.bytes = number()?,
            "--seconds" => options.seconds = number()? as u64,
            "--replicas" => options.replicas = number()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.servers.is_empty() {
        return Err("--servers URL[,URL...] is required".into());
    }
    Ok(options)
}

/// One writer's publishes until `end`: their latencies in microseconds.
async fn writer(
    js: jetstream::Context,
    options: &Options,
    prefix: &str,
    w: usize,
    end: Instant,
) -> Result<Vec<u32>, String> {
    let regions: Vec<usize> = (w..options.regions).step_by(options.writers).collect();
    let mut last = vec![0u64; regions.len()];
    let body = Bytes::from(vec![0x5au8; options.bytes]);
    let mut latencies = Vec::new();
    let mut i = 0;
    while Instant::now() < end && !regions.is_empty() {
        let k = i % regions.len();
        let region = regions[k];
        let mut headers = HeaderMap::new();
        if options.fenced {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last[k].to_string().as_str(),
            );
            headers.insert(
                EXPECTED_SUBJECT_HEADER,
                format!("{prefix}.{region}.>").as_str(),
            );
        }
        let subject = format!("{prefix}.{region}.t.{}", i % 16);
        let started = Instant::now();
        let ack = js
            .publish_with_headers(subject, headers, body.clone())
            .await
            .map_err(|e| format!("publish: {e}"))?
            .await
            .map_err(|e| format!("acknowledgement: {e}"))?;
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        last[k] = ack.sequence;
        i += 1;
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = parse()?;
    let servers: Vec<async_nats::ServerAddr> = options
        .servers
        .split(',')
        .map(|url| url.parse().map_err(|e| format!("server URL {url}: {e}")))
        .collect::<Result<_, _>>()?;
    let client = async_nats::connect(servers)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", options.servers))?;
    let js = jetstream::new(client);
    let prefix = format!("floor_{}", std::process::id());
    js.create_stream(stream::Config {
        name: prefix.clone(),
        subjects: vec![format!("{prefix}.>")],
        num_replicas: options.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream {prefix}: {e}"))?;
    let started = Instant::now();
    let end = started + Duration::from_secs(options.seconds);
    let results = futures_util::future::join_all(
        (0..options.writers).map(|w| writer(js.clone(), &options, &prefix, w, end)),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&prefix).await;
    let mut latencies = Vec::new();
    for result in results {
        latencies.extend(result?);
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).copied().unwrap_or(0)
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} writers, {} regions, {} B messages, R{}, {}: {:.0} publishes/s, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        options.writers,
        options.regions,
        options.bytes,
        options.replicas,
        if options.fenced { "fenced" } else { "unfenced" },
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or(0)
    )
    .map_err(|e| format!("cannot print: {e}"))?;
    Ok(())
}
