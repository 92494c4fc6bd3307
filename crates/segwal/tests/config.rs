//! `LocalWalConfig` read from and written to TOML.

use std::time::Duration;

use segwal::{Compression, LocalWal, LocalWalConfig, Preallocation, RecoveryMode, SyncMode};

fn parse(text: &str) -> Result<LocalWalConfig, toml::de::Error> {
    toml::from_str(text)
}

/// Proves every key of the file form sets what the builder method of the
/// same name sets, with sizes and durations in human form.
#[test]
fn every_key_sets_its_builder_setting() {
    let config = parse(
        r#"
        data_dir = "/var/lib/segwal"
        segment_size = "32MiB"
        cache_size = 8
        sync_mode = { interval = "10ms" }
        recovery_mode = "skip_corrupted"
        preallocation = "reserved"
        max_entry_size = "1MiB"
        streams = 4
        max_dead_bytes = "2GiB"
        yield_while_syncing = false
        compression = "zstd"
        writes_in_place = false
        reads_in_place = false
        "#,
    )
    .unwrap();
    let built = LocalWalConfig::new("/var/lib/segwal")
        .segment_size(32 << 20)
        .cache_size(8)
        .sync_mode(SyncMode::Interval(Duration::from_millis(10)))
        .recovery_mode(RecoveryMode::SkipCorrupted)
        .preallocation(Preallocation::Reserved)
        .max_entry_size(1 << 20)
        .streams(4)
        .max_dead_bytes(2 << 30)
        .yield_while_syncing(false)
        .compression(Compression::Zstd)
        .writes_in_place(false)
        .reads_in_place(false);
    assert_eq!(config, built);
}

/// Proves a file with only `data_dir` gives the defaults of
/// `LocalWalConfig::new`, that HoraeDB's keys and units keep their
/// meaning ("64MB" is 64 MiB), and that plain integers are bytes.
#[test]
fn missing_keys_take_the_defaults() {
    assert_eq!(parse("data_dir = \"d\"").unwrap(), LocalWalConfig::new("d"));
    let horaedb = parse("data_dir = \"d\"\nsegment_size = \"64MB\"\ncache_size = 3").unwrap();
    assert_eq!(
        horaedb,
        LocalWalConfig::new("d")
            .segment_size(64 << 20)
            .cache_size(3)
    );
    let plain = parse("data_dir = \"d\"\nsegment_size = 1048576").unwrap();
    assert_eq!(plain, LocalWalConfig::new("d").segment_size(1 << 20));
    for (mode, want) in [("always", SyncMode::Always), ("never", SyncMode::Never)] {
        let config = parse(&format!("data_dir = \"d\"\nsync_mode = \"{mode}\"")).unwrap();
        assert_eq!(config.manager_config().sync_mode, want);
    }
}

/// Proves an unknown key, a missing `data_dir` and a bad value are each
/// refused with a message that names the key or the value.
#[test]
fn mistakes_are_refused_by_name() {
    let cases = [
        (
            "data_dir = \"d\"\nsegment_sise = \"1MiB\"",
            "unknown field `segment_sise`",
        ),
        ("segment_size = \"1MiB\"", "missing field `data_dir`"),
        (
            "data_dir = \"d\"\nsegment_size = \"64XB\"",
            "invalid size \"64XB\"",
        ),
        ("data_dir = \"d\"\nsegment_size = -1", "-1 is negative"),
        (
            "data_dir = \"d\"\nsync_mode = { interval = \"10 parsecs\" }",
            "invalid duration \"10 parsecs\"",
        ),
        ("data_dir = \"d\"\nsync_mode = \"sometimes\"", "sometimes"),
        ("data_dir = \"d\"\nrecovery_mode = \"lenient\"", "lenient"),
        ("data_dir = \"d\"\ncompression = \"gzip\"", "gzip"),
    ];
    for (text, want) in cases {
        let message = parse(text).unwrap_err().to_string();
        assert!(message.contains(want), "{text}: {message}");
    }
    // The line with the bad value is shown, naming its key.
    let message = parse("data_dir = \"d\"\nsegment_size = \"64XB\"")
        .unwrap_err()
        .to_string();
    assert!(message.contains("segment_size = \"64XB\""), "{message}");
}

/// Proves a configuration written to TOML reads back equal, in every sync
/// mode, with sizes and durations in human form.
#[test]
fn written_configs_read_back_equal() {
    for mode in [
        SyncMode::Always,
        SyncMode::Never,
        SyncMode::Interval(Duration::from_micros(2500)),
    ] {
        let config = LocalWalConfig::new("/data/wal")
            .segment_size(48 << 20)
            .sync_mode(mode)
            .preallocation(Preallocation::Zeroed);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("segment_size = \"48MiB\""), "{text}");
        assert_eq!(parse(&text).unwrap(), config, "{text}");
    }
    let text = toml::to_string(&LocalWalConfig::new("d")).unwrap();
    assert!(!text.contains("preallocation"), "{text}");
    assert!(text.contains("compression = \"none\""), "{text}");
}

/// Proves each compression setting reads from its name, defaults to
/// none, and writes back under the same name.
#[test]
fn compression_reads_and_writes_by_name() {
    assert_eq!(
        LocalWalConfig::new("d").manager_config().compression,
        Compression::None
    );
    for (name, want) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let config = parse(&format!("data_dir = \"d\"\ncompression = \"{name}\"")).unwrap();
        assert_eq!(config, LocalWalConfig::new("d").compression(want));
        let text = toml::to_string(&config).unwrap();
        assert!(
            text.contains(&format!("compression = \"{name}\"")),
            "{text}"
        );
    }
}

/// Proves values read from a file are checked at open like built ones,
/// before anything is written: a zero segment size is refused and the
/// data dir is left uncreated.
#[tokio::test]
async fn values_from_a_file_are_checked_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("wal");
    let text = format!(
        "data_dir = {:?}\nsegment_size = 0",
        data_dir.display().to_string()
    );
    let err = LocalWal::open(parse(&text).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("segment"), "{err}");
    assert!(!data_dir.exists());
}
