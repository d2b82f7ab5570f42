//! CRIU's own timing figures, read from the `stats-dump` / `stats-restore` files it leaves in
//! its work directory (`criu -W`, or runc's `--work-path`) after a dump, pre-dump or restore.
//!
//! They split a checkpoint's time into phases (freezing, frozen, memory dump/write, forking,
//! restore) that a wall clock around `runc checkpoint` cannot see.
//!
//! File layout (CRIU 4.2.1: criu/image.c, criu/protobuf.c, criu/include/magic.h), every u32
//! in host byte order, i.e. little-endian on the hosts corehop runs on:
//!
//! ```text
//! u32 IMG_SERVICE_MAGIC 0x55105940   head magic: stats is a "service" image (O_SERVICE)
//! u32 STATS_MAGIC       0x57093306   the image type's own magic
//! u32 len                            then `len` bytes of one protobuf `stats_entry`
//! ```
//!
//! `stats_entry` (images/stats.proto) holds `dump` (field 1) or `restore` (field 2); its
//! times are microseconds (criu/stats.c `encode_time`: tv_sec * 1e6 + tv_usec).
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name CRIU gives the dump (and pre-dump) stats (`stats-%s` with "dump").
pub const DUMP_FILE: &str = "stats-dump";
/// File name CRIU gives the restore stats.
pub const RESTORE_FILE: &str = "stats-restore";

/// Head magic of CRIU's service images (stats, irmap-cache), written before the type's magic.
const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

/// What `criu dump` measured. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DumpStats {
    /// Time to freeze (seize) the tasks.
    pub freezing_ms: f64,
    /// Time the tasks stayed frozen: the application's downtime on the source.
    pub frozen_ms: f64,
    /// Time to draw memory out of the tasks into page pipes.
    pub memdump_ms: f64,
    /// Time to write those pages to images (or the page server).
    pub memwrite_ms: f64,
    pub pages_scanned: u64,
    /// Pages left out because the parent image (`--parent-path`) already has them.
    pub pages_skipped_parent: u64,
    pub pages_written: u64,
    /// Pages left to be served on demand (`--lazy-pages`): PostCopy's remainder.
    pub pages_lazy: u64,
}

/// What `criu restore` measured. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreStats {
    /// Time to fork the task tree.
    pub forking_ms: f64,
    /// Time of the whole restore.
    pub restore_ms: f64,
    pub pages_restored: u64,
}

/// Reads `work_dir/stats-dump`.
pub fn read_dump(work_dir: &Path) -> Result<DumpStats> {
    let path = work_dir.join(DUMP_FILE);
    let bytes = read(&path)?;
    parse_dump(&bytes).with_context(|| format!("reading CRIU stats {}", path.display()))
}

/// Reads `work_dir/stats-restore`.
pub fn read_restore(work_dir: &Path) -> Result<RestoreStats> {
    let path = work_dir.join(RESTORE_FILE);
    let bytes = read(&path)?;
    parse_restore(&bytes).with_context(|| format!("reading CRIU stats {}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading CRIU stats {}", path.display()))
}

/// Parses the bytes of a `stats-dump` file.
pub fn parse_dump(bytes: &[u8]) -> Result<DumpStats> {
    let Some(d) = decode(bytes)?.dump else {
        bail!("no dump entry (is this a stats-restore file?)");
    };
    Ok(DumpStats {
        freezing_ms: ms(need(d.freezing_time, "freezing_time")?),
        frozen_ms: ms(need(d.frozen_time, "frozen_time")?),
        memdump_ms: ms(need(d.memdump_time, "memdump_time")?),
        memwrite_ms: ms(need(d.memwrite_time, "memwrite_time")?),
        pages_scanned: need(d.pages_scanned, "pages_scanned")?,
        pages_skipped_parent: need(d.pages_skipped_parent, "pages_skipped_parent")?,
        pages_written: need(d.pages_written, "pages_written")?,
        pages_lazy: need(d.pages_lazy, "pages_lazy")?,
    })
}

/// Parses the bytes of a `stats-restore` file.
pub fn parse_restore(bytes: &[u8]) -> Result<RestoreStats> {
    let Some(r) = decode(bytes)?.restore else {
        bail!("no restore entry (is this a stats-dump file?)");
    };
    Ok(RestoreStats {
        forking_ms: ms(need(r.forking_time, "forking_time")?),
        restore_ms: ms(need(r.restore_time, "restore_time")?),
        // Optional in stats.proto (added later); CRIU 4.x always writes it.
        pages_restored: need(r.pages_restored, "pages_restored")?,
    })
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

fn need<T>(v: Option<T>, field: &str) -> Result<T> {
    v.with_context(|| format!("stats entry lacks {field}"))
}

fn u32_at(bytes: &[u8], at: usize, what: &str) -> Result<u32> {
    let Some(b) = bytes.get(at..at + 4) else {
        bail!(
            "truncated: {} bytes, ends before the {what} at offset {at}",
            bytes.len()
        );
    };
    Ok(u32::from_le_bytes(b.try_into().expect("4-byte slice")))
}

fn decode(bytes: &[u8]) -> Result<StatsEntry> {
    let head = u32_at(bytes, 0, "head magic")?;
    if head != IMG_SERVICE_MAGIC {
        bail!("head magic {head:#010x}, want {IMG_SERVICE_MAGIC:#010x} (not a CRIU service image)");
    }
    let magic = u32_at(bytes, 4, "stats magic")?;
    if magic != STATS_MAGIC {
        bail!("image magic {magic:#010x}, want {STATS_MAGIC:#010x} (not a CRIU stats image)");
    }
    let len = u32_at(bytes, 8, "entry length")? as usize;
    let body = &bytes[12..];
    if body.len() < len {
        bail!("truncated: entry of {len} bytes, only {} left", body.len());
    }
    // CRIU writes exactly one entry; anything after it means this is not the file we think.
    if body.len() > len {
        bail!("{} bytes after the stats entry", body.len() - len);
    }
    <StatsEntry as prost::Message>::decode(&body[..len]).context("decoding stats_entry protobuf")
}

// Mirrors images/stats.proto. Its `required` fields are declared optional here so that a
// message lacking one is an error instead of a silent zero (prost does not check `required`);
// the wire format is the same.

#[derive(Clone, PartialEq, prost::Message)]
struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    dump: Option<DumpStatsEntry>,
    #[prost(message, optional, tag = "2")]
    restore: Option<RestoreStatsEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DumpStatsEntry {
    #[prost(uint32, optional, tag = "1")]
    freezing_time: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    frozen_time: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    memdump_time: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    memwrite_time: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pages_scanned: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pages_skipped_parent: Option<u64>,
    #[prost(uint64, optional, tag = "7")]
    pages_written: Option<u64>,
    #[prost(uint32, optional, tag = "8")]
    irmap_resolve: Option<u32>,
    #[prost(uint64, optional, tag = "9")]
    pages_lazy: Option<u64>,
    #[prost(uint64, optional, tag = "10")]
    page_pipes: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    page_pipe_bufs: Option<u64>,
    #[prost(uint64, optional, tag = "12")]
    shpages_scanned: Option<u64>,
    #[prost(uint64, optional, tag = "13")]
    shpages_skipped_parent: Option<u64>,
    #[prost(uint64, optional, tag = "14")]
    shpages_written: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RestoreStatsEntry {
    #[prost(uint64, optional, tag = "1")]
    pages_compared: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pages_skipped_cow: Option<u64>,
    #[prost(uint32, optional, tag = "3")]
    forking_time: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    restore_time: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pages_restored: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Written by criu 4.2.1 `dump --shell-job` of a `sleep`, and its `restore -d`.
    const REAL_DUMP: &[u8] = include_bytes!("../tests/data/stats-dump");
    const REAL_RESTORE: &[u8] = include_bytes!("../tests/data/stats-restore");

    fn file(entry: &StatsEntry) -> Vec<u8> {
        let body = entry.encode_to_vec();
        let mut v = Vec::new();
        v.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
        v.extend_from_slice(&STATS_MAGIC.to_le_bytes());
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(&body);
        v
    }

    fn dump_entry() -> StatsEntry {
        StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: Some(1_500),
                frozen_time: Some(250_000),
                memdump_time: Some(42),
                memwrite_time: Some(7_000_001),
                pages_scanned: Some(1 << 40),
                pages_skipped_parent: Some(3),
                pages_written: Some(900),
                irmap_resolve: Some(0),
                pages_lazy: Some(5),
                ..Default::default()
            }),
            restore: None,
        }
    }

    fn restore_entry() -> StatsEntry {
        StatsEntry {
            dump: None,
            restore: Some(RestoreStatsEntry {
                pages_compared: Some(0),
                pages_skipped_cow: Some(0),
                forking_time: Some(2),
                restore_time: Some(10_010),
                pages_restored: Some(30),
            }),
        }
    }

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.expect_err("should fail"))
    }

    /// A scratch work dir, removed on drop.
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("criu-stats-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_synthetic_dump() {
        let s = parse_dump(&file(&dump_entry())).unwrap();
        assert_eq!(
            s,
            DumpStats {
                freezing_ms: 1.5,
                frozen_ms: 250.0,
                memdump_ms: 0.042,
                memwrite_ms: 7000.001,
                pages_scanned: 1 << 40,
                pages_skipped_parent: 3,
                pages_written: 900,
                pages_lazy: 5,
            }
        );
    }

    #[test]
    fn parses_synthetic_restore() {
        let s = parse_restore(&file(&restore_entry())).unwrap();
        assert_eq!(
            s,
            RestoreStats {
                forking_ms: 0.002,
                restore_ms: 10.01,
                pages_restored: 30
            }
        );
    }

    #[test]
    fn reads_from_work_dir() {
        let d = Dir::new("read");
        std::fs::write(d.0.join(DUMP_FILE), file(&dump_entry())).unwrap();
        std::fs::write(d.0.join(RESTORE_FILE), file(&restore_entry())).unwrap();
        assert_eq!(read_dump(&d.0).unwrap().frozen_ms, 250.0);
        assert_eq!(read_restore(&d.0).unwrap().pages_restored, 30);
    }

    #[test]
    fn real_criu_files() {
        // Expected values decoded by hand from the bytes (xxd) of the files.
        assert_eq!(
            parse_dump(REAL_DUMP).unwrap(),
            DumpStats {
                freezing_ms: 0.153,
                frozen_ms: 23.492,
                memdump_ms: 1.188,
                memwrite_ms: 0.169,
                pages_scanned: 58,
                pages_skipped_parent: 0,
                pages_written: 30,
                pages_lazy: 0,
            }
        );
        assert_eq!(
            parse_restore(REAL_RESTORE).unwrap(),
            RestoreStats {
                forking_ms: 0.002,
                restore_ms: 10.01,
                pages_restored: 30
            }
        );
        // Our encoder lays out a file the same way CRIU does.
        let real = decode(REAL_DUMP).unwrap();
        assert_eq!(file(&real), REAL_DUMP);
    }

    #[test]
    fn errors_name_the_file() {
        let d = Dir::new("errs");
        let e = err_text(read_dump(&d.0));
        assert!(
            e.contains("stats-dump") && e.contains(&*d.0.to_string_lossy()),
            "{e}"
        );

        std::fs::write(d.0.join(RESTORE_FILE), b"garbage").unwrap();
        let e = err_text(read_restore(&d.0));
        assert!(e.contains("stats-restore") && e.contains("magic"), "{e}");
    }

    #[test]
    fn truncated_is_an_error() {
        let f = file(&dump_entry());
        for n in 0..f.len() {
            let e = err_text(parse_dump(&f[..n]));
            assert!(e.contains("truncated"), "{n}: {e}");
        }
    }

    #[test]
    fn wrong_magic_is_an_error() {
        let mut f = file(&dump_entry());
        f[0] ^= 1;
        assert!(err_text(parse_dump(&f)).contains("head magic"));

        let mut f = file(&dump_entry());
        // A pagemap image: a valid CRIU image, but not stats.
        f[4..8].copy_from_slice(&0x5608_4025u32.to_le_bytes());
        assert!(err_text(parse_dump(&f)).contains("not a CRIU stats image"));
    }

    #[test]
    fn garbage_protobuf_is_an_error() {
        let mut f = file(&StatsEntry::default())[..8].to_vec();
        let junk = [0xffu8; 16];
        f.extend_from_slice(&(junk.len() as u32).to_le_bytes());
        f.extend_from_slice(&junk);
        assert!(err_text(parse_dump(&f)).contains("protobuf"));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut f = file(&dump_entry());
        f.push(0);
        assert!(err_text(parse_dump(&f)).contains("after the stats entry"));
    }

    #[test]
    fn missing_entry_or_field_is_an_error() {
        assert!(err_text(parse_dump(REAL_RESTORE)).contains("no dump entry"));
        assert!(err_text(parse_restore(REAL_DUMP)).contains("no restore entry"));
        assert!(err_text(parse_dump(&file(&StatsEntry::default()))).contains("no dump entry"));

        let mut e = dump_entry();
        e.dump.as_mut().unwrap().frozen_time = None;
        assert!(err_text(parse_dump(&file(&e))).contains("lacks frozen_time"));
    }
}
