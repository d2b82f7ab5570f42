//! Subscriber store: one SQLite table with the AKA credentials, the SQN counter and where the
//! subscriber is registered (the serving MME of the last Update Location, and whether that MME
//! purged the UE, TS 29.272 5.2.1.1 and 5.2.3.1).
//!
//! SQN is advanced and written in the same transaction that reads it, so a vector is never
//! handed out twice with the same SQN even if the process is checkpointed/killed between two
//! authentications. A database from before the registration columns is migrated on open
//! (`PRAGMA user_version` counts the schema steps applied).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};

/// SQN step per authentication: TS 33.102 C.3.2 splits SQN into SEQ || IND with a 5-bit IND,
/// so +32 increments SEQ by one (the Open5GS HSS does the same).
pub const SQN_STEP: u64 = 32;

/// AMF for EPS vectors: TS 33.401 6.1.1 requires the AMF "separation bit" (bit 0) set.
pub const DEFAULT_AMF: [u8; 2] = [0x80, 0x00];

#[derive(Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// 6..15 decimal digits.
    pub imsi: String,
    pub k: [u8; 16],
    pub opc: [u8; 16],
    pub amf: [u8; 2],
    /// Last SQN handed out (the next vector uses `sqn + SQN_STEP`).
    pub sqn: u64,
    pub msisdn: Option<String>,
}

/// Keys stay out of logs and error messages.
impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("imsi", &self.imsi)
            .field("amf", &hex(&self.amf))
            .field("sqn", &self.sqn)
            .field("msisdn", &self.msisdn)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("subscriber database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create directory {path} for the subscriber database: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("IMSI {0} already exists; remove it or use another IMSI")]
    Duplicate(String),
    #[error("invalid IMSI {0:?}: expected 6 to 15 decimal digits")]
    BadImsi(String),
    #[error("invalid MSISDN {0:?}: expected 1 to 15 decimal digits")]
    BadMsisdn(String),
    #[error("invalid {field} {value:?}: expected {expected} hex digits")]
    BadHex {
        field: &'static str,
        value: String,
        expected: usize,
    },
    #[error("invalid SQN {0:?}: expected a decimal number or 0x-prefixed hex below 2^48")]
    BadSqn(String),
    #[error("cannot read subscriber file {path}: {source}")]
    ReadCsv {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The MME a subscriber is registered at (TS 29.272 5.2.1.1.3: the HSS stores the MME's
/// identity from the ULR's Origin-Host and Origin-Realm).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub mme_host: String,
    pub mme_realm: String,
    /// "UE purged in MME": that MME sent a Purge-UE and holds no context any more.
    pub purged: bool,
}

/// Schema steps after the original table; each runs once, in order, on an older database.
const MIGRATIONS: &[&str] = &[
    // 1: the serving MME and the purge flag.
    "ALTER TABLE subscribers ADD COLUMN mme_host TEXT;
     ALTER TABLE subscribers ADD COLUMN mme_realm TEXT;
     ALTER TABLE subscribers ADD COLUMN purged INTEGER NOT NULL DEFAULT 0;",
];

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, creating its directory too (the
    /// default lives on a fresh tmpfs in the container).
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(|source| StoreError::Db {
            path: path.clone(),
            source,
        })?;
        let store = Store { conn, path };
        store
            .conn
            .execute_batch(
                "PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS subscribers (
                     imsi   TEXT PRIMARY KEY NOT NULL,
                     k      BLOB NOT NULL CHECK (length(k) = 16),
                     opc    BLOB NOT NULL CHECK (length(opc) = 16),
                     amf    BLOB NOT NULL CHECK (length(amf) = 2),
                     sqn    INTEGER NOT NULL CHECK (sqn >= 0 AND sqn < 281474976710656),
                     msisdn TEXT
                 );",
            )
            .map_err(|e| store.db(e))?;
        store.migrate()?;
        Ok(store)
    }

    /// Applies the schema steps this database has not seen yet, each in its own transaction
    /// with the version bump, so a crash leaves either the old or the new schema.
    fn migrate(&self) -> Result<()> {
        let db = |e| self.db(e);
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let sql = format!("BEGIN; {step} PRAGMA user_version = {}; COMMIT;", i + 1);
            if let Err(e) = self.conn.execute_batch(&sql) {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(db(e));
            }
            tracing::info!(db = %self.path.display(), version = i + 1, "subscriber database migrated");
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds one subscriber; an existing IMSI is [`StoreError::Duplicate`].
    pub fn add(&mut self, sub: &Subscriber) -> Result<()> {
        validate(sub)?;
        let tx = self.conn.transaction().map_err(|e| StoreError::Db {
            path: self.path.clone(),
            source: e,
        })?;
        insert(&tx, sub).map_err(|e| map_insert_err(&self.path, &sub.imsi, e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Deletes a subscriber; `Ok(false)` if the IMSI was not there.
    pub fn remove(&mut self, imsi: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM subscribers WHERE imsi = ?1", [imsi])
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    /// All subscribers ordered by IMSI.
    pub fn list(&self) -> Result<Vec<Subscriber>> {
        let mut st = self
            .conn
            .prepare("SELECT imsi, k, opc, amf, sqn, msisdn FROM subscribers ORDER BY imsi")
            .map_err(|e| self.db(e))?;
        let rows = st
            .query_map([], row_to_subscriber)
            .map_err(|e| self.db(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db(e))
    }

    pub fn get(&self, imsi: &str) -> Result<Option<Subscriber>> {
        self.conn
            .query_row(
                "SELECT imsi, k, opc, amf, sqn, msisdn FROM subscribers WHERE imsi = ?1",
                [imsi],
                row_to_subscriber,
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Update Location from `mme_host`/`mme_realm`: records it as the serving MME and clears
    /// the purge flag (TS 29.272 5.2.1.1.3). Returns the registration it replaces (`None` if
    /// there was none), or `Ok(None)` for an unknown IMSI.
    pub fn update_location(
        &mut self,
        imsi: &str,
        mme_host: &str,
        mme_realm: &str,
    ) -> Result<Option<Option<Registration>>> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.write_transaction()?;
        let Some(old) = registration(&tx, imsi).map_err(db)? else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE subscribers SET mme_host = ?1, mme_realm = ?2, purged = 0 WHERE imsi = ?3",
            params![mme_host, mme_realm, imsi],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Some(old))
    }

    /// Purge UE from `mme_host`: when it is the registered MME the subscriber is marked
    /// purged and `Ok(Some(true))` returned (the PUA then tells it to freeze the M-TMSI);
    /// a purge from another MME changes nothing (`Ok(Some(false))`). `Ok(None)`: unknown IMSI.
    pub fn purge(&mut self, imsi: &str, mme_host: &str) -> Result<Option<bool>> {
        if self.get(imsi)?.is_none() {
            return Ok(None);
        }
        let n = self
            .conn
            .execute(
                "UPDATE subscribers SET purged = 1 WHERE imsi = ?1 AND mme_host = ?2",
                params![imsi, mme_host],
            )
            .map_err(|e| self.db(e))?;
        Ok(Some(n > 0))
    }

    /// Where the subscriber is registered: `Ok(None)` for an unknown IMSI, `Some(None)` if no
    /// MME ever updated its location.
    pub fn registration(&self, imsi: &str) -> Result<Option<Option<Registration>>> {
        registration(&self.conn, imsi).map_err(|e| self.db(e))
    }

    /// Every registered subscriber (a serving MME recorded), by IMSI.
    pub fn registrations(&self) -> Result<Vec<(String, Registration)>> {
        let rows = || -> rusqlite::Result<Vec<(String, Registration)>> {
            let mut st = self.conn.prepare(
                "SELECT imsi, mme_host, mme_realm, purged FROM subscribers \
                 WHERE mme_host IS NOT NULL ORDER BY imsi",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    Registration {
                        mme_host: r.get(1)?,
                        mme_realm: r.get(2)?,
                        purged: r.get(3)?,
                    },
                ))
            })?;
            rows.collect()
        };
        rows().map_err(|e| self.db(e))
    }

    pub fn count(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT count(*) FROM subscribers", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(|e| self.db(e))
    }

    /// Imports a CSV file (see [`read_csv`]) all-or-nothing: a bad line or a duplicate IMSI
    /// leaves the database unchanged. Returns the number of subscribers added.
    pub fn import_csv(&mut self, path: impl AsRef<Path>) -> Result<usize> {
        let subs = read_csv(path.as_ref())?;
        self.add_all(&subs)?;
        Ok(subs.len())
    }

    /// Adds many subscribers in one transaction.
    pub fn add_all(&mut self, subs: &[Subscriber]) -> Result<()> {
        for s in subs {
            validate(s)?;
        }
        let tx = self.conn.transaction().map_err(|e| StoreError::Db {
            path: self.path.clone(),
            source: e,
        })?;
        for s in subs {
            insert(&tx, s).map_err(|e| map_insert_err(&self.path, &s.imsi, e))?;
        }
        tx.commit().map_err(|e| self.db(e))
    }

    /// A transaction holding the write lock from the start: IMMEDIATE, so a
    /// read-modify-write cannot interleave with another process (e.g. `corehop hss add`
    /// on the same file).
    fn write_transaction(&mut self) -> Result<rusqlite::Transaction<'_>> {
        let path = &self.path;
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Db {
                path: path.clone(),
                source,
            })
    }

    /// Reserves `n` consecutive SQNs for `imsi` in one write transaction and returns the
    /// subscriber (with `sqn` = the last reserved value) and the SQNs to put in the vectors.
    /// `restart_from` (SQN_MS from a verified AUTS) replaces the stored counter first.
    /// `Ok(None)` if the IMSI is unknown.
    pub fn reserve_sqns(
        &mut self,
        imsi: &str,
        n: u32,
        restart_from: Option<u64>,
    ) -> Result<Option<(Subscriber, Vec<u64>)>> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self.write_transaction()?;
        let Some(mut sub) = tx
            .query_row(
                "SELECT imsi, k, opc, amf, sqn, msisdn FROM subscribers WHERE imsi = ?1",
                [imsi],
                row_to_subscriber,
            )
            .optional()
            .map_err(db)?
        else {
            return Ok(None);
        };
        let mut sqn = restart_from.unwrap_or(sub.sqn);
        let sqns: Vec<u64> = (0..n)
            .map(|_| {
                sqn = (sqn + SQN_STEP) & aka::SQN_MAX;
                sqn
            })
            .collect();
        tx.execute(
            "UPDATE subscribers SET sqn = ?1 WHERE imsi = ?2",
            params![sqn as i64, imsi],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        sub.sqn = sqn;
        Ok(Some((sub, sqns)))
    }
}

fn registration(conn: &Connection, imsi: &str) -> rusqlite::Result<Option<Option<Registration>>> {
    conn.query_row(
        "SELECT mme_host, mme_realm, purged FROM subscribers WHERE imsi = ?1",
        [imsi],
        |r| {
            let host: Option<String> = r.get(0)?;
            let realm: Option<String> = r.get(1)?;
            let purged: bool = r.get(2)?;
            Ok(host.map(|mme_host| Registration {
                mme_host,
                mme_realm: realm.unwrap_or_default(),
                purged,
            }))
        },
    )
    .optional()
}

fn insert(tx: &rusqlite::Transaction<'_>, s: &Subscriber) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO subscribers (imsi, k, opc, amf, sqn, msisdn) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            s.imsi,
            &s.k[..],
            &s.opc[..],
            &s.amf[..],
            s.sqn as i64,
            s.msisdn
        ],
    )
}

fn map_insert_err(path: &Path, imsi: &str, e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate(imsi.to_string())
        }
        source => StoreError::Db {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn row_to_subscriber(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscriber> {
    // The CHECK constraints guarantee the blob sizes; a file edited by hand that violates them
    // surfaces as a conversion error rather than a panic.
    fn blob<const N: usize>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
        let v: Vec<u8> = r.get(i)?;
        v.try_into().map_err(|v: Vec<u8>| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Blob,
                format!("expected {N} bytes, found {}", v.len()).into(),
            )
        })
    }
    Ok(Subscriber {
        imsi: r.get(0)?,
        k: blob(r, 1)?,
        opc: blob(r, 2)?,
        amf: blob(r, 3)?,
        sqn: r.get::<_, i64>(4)? as u64,
        msisdn: r.get(5)?,
    })
}

fn validate(s: &Subscriber) -> Result<()> {
    if !is_digits(&s.imsi, 6, 15) {
        return Err(StoreError::BadImsi(s.imsi.clone()));
    }
    if let Some(m) = &s.msisdn {
        if !is_digits(m, 1, 15) {
            return Err(StoreError::BadMsisdn(m.clone()));
        }
    }
    if s.sqn > aka::SQN_MAX {
        return Err(StoreError::BadSqn(s.sqn.to_string()));
    }
    Ok(())
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl Subscriber {
    /// Builds a subscriber from text fields as typed on the command line or in the CSV:
    /// `k`/`opc` 32 hex digits, `amf` 4 hex digits, `sqn` decimal or 0x-hex.
    pub fn parse(
        imsi: &str,
        k: &str,
        opc: &str,
        amf: &str,
        sqn: &str,
        msisdn: Option<&str>,
    ) -> Result<Self> {
        let s = Subscriber {
            imsi: imsi.trim().to_string(),
            k: parse_hex("K", k)?,
            opc: parse_hex("OPc", opc)?,
            amf: parse_hex("AMF", amf)?,
            sqn: parse_sqn(sqn)?,
            msisdn: msisdn
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string),
        };
        validate(&s)?;
        Ok(s)
    }
}

/// Exactly `N` bytes of hex (whitespace around is ignored).
pub fn parse_hex<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N]> {
    let t = s.trim().as_bytes();
    let err = || StoreError::BadHex {
        field,
        value: s.to_string(),
        expected: N * 2,
    };
    if t.len() != N * 2 {
        return Err(err());
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in t.chunks(2).enumerate() {
        out[i] = (nibble(pair[0]).ok_or_else(err)? << 4) | nibble(pair[1]).ok_or_else(err)?;
    }
    Ok(out)
}

pub fn parse_sqn(s: &str) -> Result<u64> {
    let t = s.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    v.ok()
        .filter(|v| *v <= aka::SQN_MAX)
        .ok_or_else(|| StoreError::BadSqn(s.to_string()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Column header of the subscriber CSV; an `msisdn` column may follow.
pub const CSV_HEADER: &str = "imsi,k,opc,amf,sqn";

/// Reads a subscriber CSV (`imsi,k,opc,amf,sqn[,msisdn]` header, one subscriber per line;
/// blank lines and `#` comments ignored). Errors name the file and line. Duplicates within
/// the file are reported too. Pure parsing, usable without a database (the RAN emulator reads
/// the UE keys from the same file).
pub fn read_csv(path: &Path) -> Result<Vec<Subscriber>> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::ReadCsv {
        path: path.to_path_buf(),
        source,
    })?;
    parse_csv(path, &text)
}

fn parse_csv(path: &Path, text: &str) -> Result<Vec<Subscriber>> {
    let csv_err = |line, message: String| StoreError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((hline, header)) = lines.next() else {
        return Err(csv_err(
            1,
            format!("empty file, expected the header {CSV_HEADER:?}"),
        ));
    };
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let has_msisdn = match cols
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["imsi", "k", "opc", "amf", "sqn"] => false,
        ["imsi", "k", "opc", "amf", "sqn", "msisdn"] => true,
        _ => {
            return Err(csv_err(
                hline,
                format!("header is {header:?}, expected {CSV_HEADER:?} (optionally ,msisdn)"),
            ))
        }
    };
    let mut seen = std::collections::HashMap::new();
    let mut subs = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != cols.len() {
            return Err(csv_err(
                n,
                format!(
                    "{} fields, expected {} ({})",
                    f.len(),
                    cols.len(),
                    cols.join(",")
                ),
            ));
        }
        let msisdn = if has_msisdn { f.get(5).copied() } else { None };
        let s = Subscriber::parse(f[0], f[1], f[2], f[3], f[4], msisdn)
            .map_err(|e| csv_err(n, e.to_string()))?;
        if let Some(first) = seen.insert(s.imsi.clone(), n) {
            return Err(csv_err(
                n,
                format!("IMSI {} already on line {first}", s.imsi),
            ));
        }
        subs.push(s);
    }
    Ok(subs)
}

/// `n` deterministic lab subscribers: IMSI 00101 + 10-digit index starting at 1, K and OPc
/// the TS 35.208 test set 1 values with the index in the last 4 bytes (distinct per UE,
/// readable in a capture), AMF 8000, SQN 0, MSISDN 4477000 + index.
pub fn default_subscribers(n: u32) -> Vec<Subscriber> {
    const K: [u8; 12] = [
        0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e,
    ];
    const OPC: [u8; 12] = [
        0xcd, 0x63, 0xcb, 0x71, 0x95, 0x4a, 0x9f, 0x4e, 0x48, 0xa5, 0x99, 0x4e,
    ];
    (1..=n)
        .map(|i| {
            let mut k = [0u8; 16];
            let mut opc = [0u8; 16];
            k[..12].copy_from_slice(&K);
            opc[..12].copy_from_slice(&OPC);
            k[12..].copy_from_slice(&i.to_be_bytes());
            opc[12..].copy_from_slice(&i.to_be_bytes());
            Subscriber {
                imsi: format!("00101{i:010}"),
                k,
                opc,
                amf: DEFAULT_AMF,
                sqn: 0,
                msisdn: Some(format!("4477{i:07}")),
            }
        })
        .collect()
}

/// CSV text for `subs` in the format [`read_csv`] reads.
pub fn to_csv(subs: &[Subscriber]) -> String {
    let mut out = format!("{CSV_HEADER},msisdn\n");
    for s in subs {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            s.imsi,
            hex(&s.k),
            hex(&s.opc),
            hex(&s.amf),
            s.sqn,
            s.msisdn.as_deref().unwrap_or("")
        ));
    }
    out
}
