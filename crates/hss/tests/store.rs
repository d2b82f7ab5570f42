//! Subscriber store and configuration: what `corehop hss add|list|import` relies on.

use hss::store::Registration;
use hss::store::{parse_hex, to_csv, SQN_STEP};
use hss::{default_subscribers, read_csv, Config, Store, StoreError, Subscriber};
use std::path::{Path, PathBuf};

/// A per-test directory under the system temp dir, removed on drop (also when a test fails).
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("corehop-hss-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sub(imsi: &str) -> Subscriber {
    Subscriber::parse(
        imsi,
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "cd63cb71954a9f4e48a5994e37a02baf",
        "8000",
        "0",
        None,
    )
    .expect("valid subscriber")
}

#[test]
fn add_list_get_and_duplicate() {
    let dir = TempDir::new("add");
    // The parent directory is created on open (tmpfs starts empty).
    let db = dir.0.join("nested/hss.db");
    let mut s = Store::open(&db).unwrap();
    s.add(&sub("001010000000002")).unwrap();
    s.add(&sub("001010000000001")).unwrap();
    let imsis: Vec<String> = s.list().unwrap().into_iter().map(|x| x.imsi).collect();
    assert_eq!(imsis, ["001010000000001", "001010000000002"]);
    assert_eq!(
        s.get("001010000000001").unwrap(),
        Some(sub("001010000000001"))
    );
    assert_eq!(s.get("001019999999999").unwrap(), None);
    let err = s.add(&sub("001010000000001")).unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(ref i) if i == "001010000000001"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"));
    assert_eq!(s.count().unwrap(), 2);
    assert!(s.remove("001010000000002").unwrap());
    assert!(!s.remove("001010000000002").unwrap());
    assert_eq!(s.count().unwrap(), 1);
}

#[test]
fn field_validation_errors_are_clear() {
    let bad = |imsi: &str, k: &str, opc: &str, amf: &str, sqn: &str| {
        Subscriber::parse(imsi, k, opc, amf, sqn, None)
            .unwrap_err()
            .to_string()
    };
    let k = "465b5ce8b199b49faa5f0a2ee238a6bc";
    let e = bad("001010000000001", "465b5ce8", k, "8000", "0");
    assert!(
        e.contains("invalid K") && e.contains("32 hex digits"),
        "{e}"
    );
    let e = bad(
        "001010000000001",
        k,
        &format!("{}zz", &k[..30]),
        "8000",
        "0",
    );
    assert!(e.contains("invalid OPc"), "{e}");
    let e = bad("001010000000001", k, k, "80", "0");
    assert!(
        e.contains("invalid AMF") && e.contains("4 hex digits"),
        "{e}"
    );
    let e = bad("00101abc", k, k, "8000", "0");
    assert!(e.contains("invalid IMSI"), "{e}");
    let e = bad("001010000000001", k, k, "8000", "-1");
    assert!(e.contains("invalid SQN"), "{e}");
    let e = bad("001010000000001", k, k, "8000", "0x1000000000000");
    assert!(e.contains("invalid SQN"), "{e}");
    assert_eq!(parse_hex::<2>("AMF", " 8000 ").unwrap(), [0x80, 0]);
    assert_eq!(
        Subscriber::parse("001010000000001", k, k, "8000", "0x20", None)
            .unwrap()
            .sqn,
        32
    );
}

#[test]
fn sqn_advances_by_32_and_persists() {
    let dir = TempDir::new("sqn");
    let db = dir.0.join("hss.db");
    {
        let mut s = Store::open(&db).unwrap();
        s.add(&sub("001010000000001")).unwrap();
        let (got, sqns) = s.reserve_sqns("001010000000001", 3, None).unwrap().unwrap();
        assert_eq!(sqns, [32, 64, 96]);
        assert_eq!(got.sqn, 96);
        assert!(s
            .reserve_sqns("001019999999999", 1, None)
            .unwrap()
            .is_none());
    }
    // Reopened (as after a restart or a migration): the counter was committed.
    let mut s = Store::open(&db).unwrap();
    assert_eq!(s.get("001010000000001").unwrap().unwrap().sqn, 96);
    let (_, sqns) = s
        .reserve_sqns("001010000000001", 1, Some(1000))
        .unwrap()
        .unwrap();
    assert_eq!(sqns, [1000 + SQN_STEP]);
    // Wraps within 48 bits.
    let (_, sqns) = s
        .reserve_sqns("001010000000001", 1, Some(aka::SQN_MAX))
        .unwrap()
        .unwrap();
    assert_eq!(sqns, [SQN_STEP - 1]);
}

#[test]
fn csv_import_and_errors() {
    let dir = TempDir::new("csv");
    let good = dir.file(
        "subs.csv",
        "# lab subscribers\nimsi,k,opc,amf,sqn\n\
         001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,0\n\
         \n001010000000002,465b5ce8b199b49faa5f0a2ee238a6bd,cd63cb71954a9f4e48a5994e37a02baf,8000,64\n",
    );
    let mut s = Store::open(dir.0.join("hss.db")).unwrap();
    assert_eq!(s.import_csv(&good).unwrap(), 2);
    assert_eq!(s.get("001010000000002").unwrap().unwrap().sqn, 64);
    // Importing again: duplicates, and nothing changes.
    assert!(matches!(s.import_csv(&good), Err(StoreError::Duplicate(_))));
    assert_eq!(s.count().unwrap(), 2);

    let err = |text: &str| {
        read_csv(&dir.file("bad.csv", text))
            .unwrap_err()
            .to_string()
    };
    let e = err("imsi,key\n");
    assert!(
        e.contains("bad.csv line 1") && e.contains("expected \"imsi,k,opc,amf,sqn\""),
        "{e}"
    );
    let e =
        err("imsi,k,opc,amf,sqn\n001010000000001,465b,cd63cb71954a9f4e48a5994e37a02baf,8000,0\n");
    assert!(e.contains("line 2") && e.contains("invalid K"), "{e}");
    let e = err("imsi,k,opc,amf,sqn\n001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc\n");
    assert!(
        e.contains("line 2") && e.contains("2 fields, expected 5"),
        "{e}"
    );
    let row =
        "001010000000001,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,0";
    let e = err(&format!("imsi,k,opc,amf,sqn\n{row}\n{row}\n"));
    assert!(
        e.contains("line 3") && e.contains("already on line 2"),
        "{e}"
    );
    let e = err("");
    assert!(e.contains("empty file"), "{e}");
    let e = read_csv(Path::new("/nonexistent/subs.csv"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read subscriber file /nonexistent/subs.csv"),
        "{e}"
    );
    // A failed import leaves the database as it was.
    let mixed = dir.file(
        "mixed.csv",
        &format!(
            "imsi,k,opc,amf,sqn\n{}\n001010000000009,xx,yy,8000,0\n",
            row.replace("01,", "03,")
        ),
    );
    assert!(s.import_csv(&mixed).is_err());
    assert_eq!(s.count().unwrap(), 2);
}

#[test]
fn example_csv_is_the_default_subscribers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("subscribers.example.csv");
    let expected = to_csv(&default_subscribers(1000));
    if std::env::var_os("COREHOP_REGENERATE").is_some() {
        std::fs::write(&path, &expected).expect("write example CSV");
    }
    let text = std::fs::read_to_string(&path).expect("subscribers.example.csv exists");
    assert_eq!(
        text, expected,
        "regenerate with COREHOP_REGENERATE=1 cargo test -p hss"
    );
    let subs = read_csv(&path).expect("example CSV parses");
    assert_eq!(subs.len(), 1000);
    assert_eq!(subs[0].imsi, "001010000000001");
    assert_eq!(subs[999].imsi, "001010000001000");
    assert_eq!(
        subs[0].amf,
        [0x80, 0x00],
        "EPS needs the AMF separation bit"
    );
    assert_ne!(subs[0].k, subs[1].k);
}

#[test]
fn config_defaults_and_errors() {
    let d = Config::default();
    assert_eq!(Config::from_toml("").unwrap(), d);
    assert_eq!(d.listen.to_string(), "0.0.0.0:3868");
    assert_eq!(d.origin_host, "hss.corehop.lab");
    assert_eq!(d.origin_realm, "corehop.lab");
    assert_eq!(d.db_path, Path::new("/var/lib/corehop/hss.db"));
    assert_eq!(d.apn, "internet");
    let c = Config::from_toml(
        "db_path = \"/tmp/x.db\"\nsubscribers_file = \"/etc/corehop/subs.csv\"\n",
    )
    .unwrap();
    assert_eq!(
        c.subscribers_file.as_deref(),
        Some(Path::new("/etc/corehop/subs.csv"))
    );
    assert!(Config::from_toml("dbpath = \"x\"")
        .unwrap_err()
        .to_string()
        .contains("unknown field"));
    assert!(Config::from_toml("qci = 42")
        .unwrap_err()
        .to_string()
        .contains("qci 42"));
    // Round trip through TOML (the CLI may print the effective config).
    assert_eq!(Config::from_toml(&toml::to_string(&d).unwrap()).unwrap(), d);
}

#[test]
fn registration_update_location_and_purge() {
    let dir = TempDir::new("reg");
    let mut s = Store::open(dir.0.join("hss.db")).unwrap();
    let imsi = "001010000000001";
    s.add(&sub(imsi)).unwrap();
    assert_eq!(s.registration(imsi).unwrap(), Some(None));
    assert_eq!(s.registration("001019999999999").unwrap(), None);
    assert_eq!(
        s.update_location("001019999999999", "m", "r").unwrap(),
        None
    );
    // The first ULR replaces nothing; the next one returns the MME it replaces.
    assert_eq!(
        s.update_location(imsi, "mme-a.lab", "lab").unwrap(),
        Some(None)
    );
    let a = Registration {
        mme_host: "mme-a.lab".into(),
        mme_realm: "lab".into(),
        purged: false,
    };
    assert_eq!(s.registration(imsi).unwrap(), Some(Some(a.clone())));
    // A purge from another MME changes nothing; from the registered one it marks purged.
    assert_eq!(s.purge(imsi, "mme-b.lab").unwrap(), Some(false));
    assert_eq!(s.registration(imsi).unwrap(), Some(Some(a.clone())));
    assert_eq!(s.purge(imsi, "mme-a.lab").unwrap(), Some(true));
    assert!(s.registration(imsi).unwrap().unwrap().unwrap().purged);
    assert_eq!(s.purge("001019999999999", "mme-a.lab").unwrap(), None);
    // A later ULR clears the purge and records the new MME.
    let purged_a = Registration { purged: true, ..a };
    assert_eq!(
        s.update_location(imsi, "mme-b.lab", "lab").unwrap(),
        Some(Some(purged_a))
    );
    let b = s.registration(imsi).unwrap().unwrap().unwrap();
    assert_eq!((b.mme_host.as_str(), b.purged), ("mme-b.lab", false));
}

#[test]
fn database_without_registration_columns_is_migrated() {
    let dir = TempDir::new("migrate");
    let db = dir.0.join("hss.db");
    {
        // The schema before the registration columns, with one subscriber.
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE subscribers (
                 imsi   TEXT PRIMARY KEY NOT NULL,
                 k      BLOB NOT NULL CHECK (length(k) = 16),
                 opc    BLOB NOT NULL CHECK (length(opc) = 16),
                 amf    BLOB NOT NULL CHECK (length(amf) = 2),
                 sqn    INTEGER NOT NULL CHECK (sqn >= 0 AND sqn < 281474976710656),
                 msisdn TEXT
             );",
        )
        .unwrap();
        let s = sub("001010000000001");
        c.execute(
            "INSERT INTO subscribers VALUES (?1, ?2, ?3, ?4, 64, NULL)",
            rusqlite::params![s.imsi, &s.k[..], &s.opc[..], &s.amf[..]],
        )
        .unwrap();
    }
    let mut s = Store::open(&db).unwrap();
    assert_eq!(s.get("001010000000001").unwrap().unwrap().sqn, 64);
    assert_eq!(s.registration("001010000000001").unwrap(), Some(None));
    s.update_location("001010000000001", "mme.lab", "lab")
        .unwrap();
    drop(s);
    // Opening again runs no step twice and keeps the registration.
    let s = Store::open(&db).unwrap();
    assert_eq!(
        s.registration("001010000000001")
            .unwrap()
            .unwrap()
            .unwrap()
            .mme_host,
        "mme.lab"
    );
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}
