//! Keeps docs/FORMAT.md true: its field tables, constants and golden-byte
//! dumps are checked against the code.

use segwal_format::{
    BatchMeta, ENTRY_LEN_PREFIX, FORMAT_VERSION, MAGIC, MAX_BODY_LEN, META_ENTRY_LEN,
    META_LOG_HEADER_LEN, META_LOG_MAGIC, META_RECORD_HEADER_LEN, MIN_COMPRESSED_BODY_LEN,
    MIN_SEGMENT_CAPACITY, MetaEntry, RECORD_HEADER_LEN, RecordCodec, RecordDecoder, RecordEncoder,
    SEGMENT_HEADER_LEN, SegmentHeader, ZSTD_LEVEL, decode_meta_log, encode_meta_log_header,
    encode_meta_record,
};

const FORMAT_MD: &str = include_str!("../../../docs/FORMAT.md");

/// The lines of the section headed `## {title}`, up to the next `## `.
fn section(title: &str) -> Vec<&'static str> {
    let heading = format!("## {title}");
    let mut lines = FORMAT_MD.lines().skip_while(|l| *l != heading);
    assert!(
        lines.next().is_some(),
        "docs/FORMAT.md has no section {heading:?}"
    );
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// The rows of each Markdown table in `lines`, as trimmed cells, without
/// the header and separator rows.
fn tables(lines: &[&str]) -> Vec<Vec<Vec<String>>> {
    let mut tables = Vec::new();
    let mut current: Vec<Vec<String>> = Vec::new();
    for line in lines.iter().chain(std::iter::once(&"")) {
        if line.starts_with('|') {
            let cells = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            current.push(cells);
        } else if !current.is_empty() {
            tables.push(current.split_off(2));
            current.clear();
        }
    }
    tables
}

/// Checks that a field table's offsets tile `[0, len)` exactly and returns
/// the field names.
fn check_fields(table: &[Vec<String>], len: usize, what: &str) -> Vec<String> {
    let mut next = 0;
    for row in table {
        let offset: usize = row[0]
            .parse()
            .unwrap_or_else(|_| panic!("{what}: offset {:?}", row[0]));
        let size: usize = row[1]
            .parse()
            .unwrap_or_else(|_| panic!("{what}: size {:?}", row[1]));
        assert_eq!(
            offset, next,
            "{what}: field {} starts at {offset}, expected {next}",
            row[2]
        );
        next += size;
    }
    assert_eq!(
        next, len,
        "{what}: documented fields add up to {next} bytes, the code says {len}"
    );
    table.iter().map(|row| row[2].clone()).collect()
}

#[test]
fn segment_header_table_matches_the_code() {
    let tables = tables(&section("Segment header"));
    let fields = check_fields(&tables[0], SEGMENT_HEADER_LEN, "segment header");
    assert_eq!(
        fields,
        [
            "magic",
            "version",
            "reserved",
            "stream_id",
            "segment_id",
            "salt",
            "capacity",
            "header_crc"
        ]
    );
}

#[test]
fn record_tables_match_the_code() {
    let tables = tables(&section("Record"));
    let fields = check_fields(&tables[0], RECORD_HEADER_LEN, "record header");
    assert_eq!(
        fields,
        [
            "header_crc",
            "kind",
            "codec",
            "reserved",
            "entry_count",
            "body_len",
            "body_crc",
            "raw_len",
            "segment_id",
            "region_id",
            "table_id",
            "first_sequence",
            "durable_offset"
        ]
    );
    let entry = &tables[1];
    assert_eq!(
        entry[0][..3],
        ["0", ENTRY_LEN_PREFIX.to_string().as_str(), "len"]
    );
    assert_eq!(
        entry[1][..3],
        [ENTRY_LEN_PREFIX.to_string().as_str(), "len", "payload"]
    );
    // The table of codecs: every codec the code knows, by byte and name.
    let codecs: Vec<(u8, String)> = tables[2]
        .iter()
        .map(|row| (row[0].parse().expect("a codec byte"), row[1].clone()))
        .collect();
    let known: Vec<(u8, String)> = RecordCodec::ALL
        .iter()
        .map(|c| (*c as u8, c.name().to_owned()))
        .collect();
    assert_eq!(codecs, known);
}

#[test]
fn meta_log_tables_match_the_code() {
    let tables = tables(&section("Meta log"));
    let header = check_fields(&tables[0], META_LOG_HEADER_LEN, "meta log header");
    assert_eq!(header, ["magic", "version", "reserved", "header_crc"]);
    let record = check_fields(&tables[1], META_RECORD_HEADER_LEN, "meta record header");
    assert_eq!(record, ["record_crc", "entry_count"]);
    let entry = check_fields(&tables[2], META_ENTRY_LEN, "meta log entry");
    assert_eq!(entry, ["kind", "reserved", "a", "b", "c"]);

    // The table of kinds: each documented kind, encoded with distinct
    // values, puts them in the documented fields and decodes back.
    let kinds = &tables[3];
    assert_eq!(kinds.len(), 4);
    for row in kinds {
        let kind: u8 = row[0].parse().expect("a kind number");
        let entry = match row[1].trim_matches('`') {
            "DeleteMark" => MetaEntry::DeleteMark {
                region_id: 11,
                table_id: 22,
                deleted_up_to: 33,
            },
            "TableMax" => MetaEntry::TableMax {
                region_id: 11,
                table_id: 22,
                max_sequence: 33,
            },
            "SequenceFloor" => MetaEntry::SequenceFloor {
                region_id: 11,
                next_sequence: 33,
            },
            "SegmentEnd" => MetaEntry::SegmentEnd {
                segment_id: 11,
                end: 33,
            },
            other => panic!("undocumented kind name {other:?}"),
        };
        let mut bytes = encode_meta_log_header().to_vec();
        let start = bytes.len();
        encode_meta_record(&[entry], &mut bytes);
        let entry_at = start + META_RECORD_HEADER_LEN;
        let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(bytes[entry_at], kind, "{row:?}");
        assert_eq!(field(entry_at + 8), 11, "{row:?}");
        let b_used = row[3] != "0";
        assert_eq!(field(entry_at + 16), if b_used { 22 } else { 0 }, "{row:?}");
        assert_eq!(field(entry_at + 24), 33, "{row:?}");
        assert_eq!(decode_meta_log(&bytes).unwrap().entries, [entry]);
    }
}

#[test]
fn constants_table_matches_the_code() {
    let tables = tables(&section("Constants"));
    let documented: Vec<(String, String)> = tables[0]
        .iter()
        .map(|row| (row[0].trim_matches('`').to_owned(), row[1].clone()))
        .collect();
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let expected = [
        ("MAGIC", hex(&MAGIC)),
        ("FORMAT_VERSION", FORMAT_VERSION.to_string()),
        ("SEGMENT_HEADER_LEN", SEGMENT_HEADER_LEN.to_string()),
        ("MIN_SEGMENT_CAPACITY", MIN_SEGMENT_CAPACITY.to_string()),
        ("RECORD_HEADER_LEN", RECORD_HEADER_LEN.to_string()),
        ("ENTRY_LEN_PREFIX", ENTRY_LEN_PREFIX.to_string()),
        ("MAX_BODY_LEN", MAX_BODY_LEN.to_string()),
        (
            "MIN_COMPRESSED_BODY_LEN",
            MIN_COMPRESSED_BODY_LEN.to_string(),
        ),
        ("ZSTD_LEVEL", ZSTD_LEVEL.to_string()),
        ("META_LOG_MAGIC", hex(&META_LOG_MAGIC)),
        ("META_LOG_HEADER_LEN", META_LOG_HEADER_LEN.to_string()),
        ("META_RECORD_HEADER_LEN", META_RECORD_HEADER_LEN.to_string()),
        ("META_ENTRY_LEN", META_ENTRY_LEN.to_string()),
    ];
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    assert_eq!(documented, expected);
}

/// The bytes of each `hexdump`-style code block (offset column dropped).
fn hex_dumps(lines: &[&str]) -> Vec<Vec<u8>> {
    let mut dumps = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in lines {
        match (line.starts_with("```"), current.as_mut()) {
            (true, None) => current = Some(Vec::new()),
            (true, Some(_)) => dumps.push(current.take().unwrap()),
            (false, Some(bytes)) => bytes.extend(
                line.split_whitespace()
                    .skip(1)
                    .map(|b| u8::from_str_radix(b, 16).expect("a hex byte")),
            ),
            (false, None) => {}
        }
    }
    dumps
}

#[test]
fn golden_byte_dumps_match_the_encoder() {
    let dumps = hex_dumps(&section("Golden bytes"));
    assert_eq!(dumps.len(), 6);
    let header = SegmentHeader {
        stream_id: 0x0102_0304_0506_0708,
        segment_id: 42,
        salt: 0xa1a2_a3a4_a5a6_a7a8,
        capacity: 0x0400_0000,
    };
    assert_eq!(dumps[0], header.encode());
    let segment = SegmentHeader {
        stream_id: 1,
        segment_id: 5,
        salt: 0xa1a2_a3a4_a5a6_a7a8,
        capacity: 0x0400_0000,
    };
    let meta = BatchMeta {
        region_id: 0x2122_2324_2526_2728,
        table_id: 0x1122_3344_5566_7788,
        first_sequence: 10,
        durable_offset: 32,
    };
    let mut record = Vec::new();
    RecordEncoder::new(&segment)
        .encode(&meta, &[b"ab".as_slice(), b""], &mut record)
        .unwrap();
    assert_eq!(dumps[1], record);
    assert_eq!(dumps[2], encode_meta_log_header());
    let mut meta_record = Vec::new();
    encode_meta_record(
        &[
            MetaEntry::DeleteMark {
                region_id: 1,
                table_id: 2,
                deleted_up_to: 10,
            },
            MetaEntry::SequenceFloor {
                region_id: 1,
                next_sequence: 11,
            },
        ],
        &mut meta_record,
    );
    assert_eq!(dumps[3], meta_record);
    // The compressed golden records: the documented batch of two rows,
    // which decodes from the documented bytes and encodes to them.
    let rows = [
        b"cpu,host=a usage=1.5;".repeat(4),
        b"cpu,host=b usage=2.5;".repeat(4),
    ];
    for (dump, codec) in dumps[4..].iter().zip([RecordCodec::Lz4, RecordCodec::Zstd]) {
        let record = RecordDecoder::new(&segment).decode(dump, 64).unwrap();
        assert_eq!(record.codec(), codec);
        let body = record.body().unwrap();
        let payloads: Vec<&[u8]> = body.entries().map(|e| e.payload).collect();
        assert_eq!(payloads, [rows[0].as_slice(), rows[1].as_slice()]);
        let mut encoded = Vec::new();
        RecordEncoder::new(&segment)
            .with_codec(codec)
            .encode(&meta, &rows, &mut encoded)
            .unwrap();
        assert_eq!(dump, &encoded, "{codec}");
    }
}
