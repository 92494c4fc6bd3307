//! Writes a few batches through a metered `LocalWal` and prints what
//! Prometheus would scrape: `cargo run -p segwal --example metrics_scrape`.

use segwal::metrics::MeteredWal;
use segwal::{LocalWal, LocalWalConfig, LogWriteBatch, WalLocation, WalManager, WriteContext};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let registry = prometheus::Registry::new();
    let wal = LocalWal::open(LocalWalConfig::new(dir.path())).await?;
    let wal = MeteredWal::register(wal, &registry, "data")?;
    for i in 0..1000u64 {
        let mut batch = LogWriteBatch::new(WalLocation::new(i % 16, 1));
        batch.push(vec![0u8; 1024]);
        wal.write(&WriteContext::default(), &batch).await?;
    }
    let mut text = String::new();
    prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text)?;
    #[allow(clippy::print_stdout)] // The scrape is the example's output.
    {
        print!("{text}");
    }
    Ok(())
}
