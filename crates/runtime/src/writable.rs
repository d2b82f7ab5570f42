//! A function's one writable folder (`/run` in the container): a tmpfs the agent mounts on
//! the host and binds in, which CRIU is told is external. The agent carries its files
//! itself, in-process: CRIU dumps and restores a tmpfs with `tar` and `gzip` processes each
//! way, inside the frozen window (~5 ms of a dump and ~3.5 ms of a restore, measured in
//! CRIU's logs). A fresh tmpfs numbers its inodes in creation order, so the files are made
//! again in their inode order, and for a file the function holds open numbers are used up
//! until it gets its own back: SQLite (the HSS's database) refuses every write once the
//! inode at its path is not the one it opened (SQLITE_READONLY_DBMOVED).
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The file of an image round that holds the folder (a tar, in inode order).
pub const IMAGE: &str = "writable.tar";
/// PAX keys: an entry's inode number at the dump, and that the function held it open.
const INO_KEY: &str = "COREHOP.ino";
const OPEN_KEY: &str = "COREHOP.open";
/// At most this many numbers are used up to give an open file its inode number back (each
/// costs a create and an unlink).
const MAX_SKIP: u64 = 100_000;
/// Options of the tmpfs, as runc mounted the function's tmpfs before.
const OPTIONS: &str = "size=262144k,mode=1777";
/// The scratch name of the files made only to use up inode numbers.
const SKIP_NAME: &str = ".corehop-skip";

/// Mounts an empty tmpfs at `at` (whatever was mounted there is detached).
pub fn mount_fresh(at: &Path) -> Result<()> {
    crate::containers::unmount(at);
    crate::containers::mount_tmpfs(at, OPTIONS)
}

/// A tmpfs mounted at `at` (its own device) that holds nothing yet.
fn is_fresh(at: &Path) -> bool {
    crate::containers::is_mount_point(at)
        && std::fs::read_dir(at).is_ok_and(|mut d| d.next().is_none())
}

/// Saves the folder at `root` into `image`, with the function's tasks `pids` stopped (their
/// open files are marked, to get their inode numbers back).
pub fn save(root: &Path, pids: &[i32], image: &Path) -> Result<()> {
    let dev = std::fs::metadata(root)?.dev();
    let open: HashSet<u64> = pids
        .iter()
        .flat_map(|p| {
            std::fs::read_dir(format!("/proc/{p}/fd"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .filter(|m| m.dev() == dev)
        .map(|m| m.ino())
        .collect();
    let mut entries = vec![];
    walk(root, Path::new(""), &mut entries)?;
    // Hard links of one inode in path order, the first one carrying the content.
    entries.sort_by(|a, b| (a.1.ino(), &a.0).cmp(&(b.1.ino(), &b.0)));
    let mut tar = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(image)?));
    let mut first_path: HashMap<u64, &Path> = HashMap::new();
    for (rel, meta) in &entries {
        let ino = meta.ino().to_string();
        let mut pax = vec![(INO_KEY, ino.as_bytes())];
        if open.contains(&meta.ino()) {
            pax.push((OPEN_KEY, b"1"));
        }
        tar.append_pax_extensions(pax)?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata(meta);
        let ft = meta.file_type();
        if let Some(first) = first_path.get(&meta.ino()).filter(|_| !ft.is_dir()) {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            tar.append_link(&mut h, rel, first)?;
        } else if ft.is_symlink() {
            tar.append_link(&mut h, rel, std::fs::read_link(root.join(rel))?)?;
        } else if ft.is_file() {
            tar.append_data(&mut h, rel, std::fs::File::open(root.join(rel))?)?;
        } else {
            // Folders and FIFOs: their header is all. (Sockets were left out by `walk`:
            // CRIU binds a restored socket to its path again.)
            h.set_size(0);
            tar.append_data(&mut h, rel, std::io::empty())?;
        }
        first_path.entry(meta.ino()).or_insert(rel);
    }
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// Every entry under `dir` (paths relative to the folder's root), sockets and device nodes
/// left out, without descending into other mounts.
fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    for e in std::fs::read_dir(root.join(rel))? {
        let e = e?;
        let meta = e.metadata()?;
        let ft = meta.file_type();
        if ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            continue;
        }
        let path = rel.join(e.file_name());
        if ft.is_dir() {
            walk(root, &path, out)?;
        }
        out.push((path, meta));
    }
    Ok(())
}

/// Makes the folder at `root` what `image` holds: a fresh tmpfs (the one mounted ahead at
/// prepare, if untouched), filled in inode order.
pub fn restore(image: &Path, root: &Path) -> Result<()> {
    if !is_fresh(root) {
        mount_fresh(root)?;
    }
    let f = std::fs::File::open(image)
        .with_context(|| format!("no {} in the image", image.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    // Inode numbers go up from the root's.
    let mut next = std::fs::metadata(root)?.ino() + 1;
    let mut folders = vec![];
    for entry in archive.entries()? {
        let mut e = entry?;
        let (mut ino, mut open) = (None, false);
        if let Some(pax) = e.pax_extensions()? {
            for x in pax.flatten() {
                match x.key() {
                    Ok(INO_KEY) => ino = x.value().ok().and_then(|v| v.parse::<u64>().ok()),
                    Ok(OPEN_KEY) => open = true,
                    _ => {}
                }
            }
        }
        let rel = e.path()?.into_owned();
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!(
                "the writable folder's image holds a path outside it: {}",
                rel.display()
            );
        }
        let dst = root.join(&rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if let Some(want) = ino.filter(|_| open) {
            use_up_numbers(root, want, &mut next)?;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        match kind {
            tar::EntryType::Directory => {
                if !dst.is_dir() {
                    std::fs::create_dir(&dst)?;
                }
                folders.push((dst.clone(), h.mtime()?));
            }
            tar::EntryType::Regular => {
                let mut f = std::fs::File::create_new(&dst)?;
                std::io::copy(&mut e, &mut f)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()?
                    .with_context(|| format!("link {} without a target", rel.display()))?
                    .into_owned();
                if kind == tar::EntryType::Symlink {
                    std::os::unix::fs::symlink(&target, &dst)?;
                } else {
                    if target
                        .components()
                        .any(|c| !matches!(c, Component::Normal(_)))
                    {
                        bail!("hard link {} points outside the folder", rel.display());
                    }
                    std::fs::hard_link(root.join(target), &dst)?;
                    continue;
                }
            }
            tar::EntryType::Fifo => {
                use std::os::unix::ffi::OsStrExt;
                let p = std::ffi::CString::new(dst.as_os_str().as_bytes())?;
                // SAFETY: mkfifo(3) with a valid C string.
                if unsafe { libc::mkfifo(p.as_ptr(), 0o600) } != 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
            }
            other => bail!(
                "unexpected {other:?} entry {} in the writable folder's image",
                rel.display()
            ),
        }
        std::os::unix::fs::lchown(&dst, Some(h.uid()? as u32), Some(h.gid()? as u32))?;
        if kind != tar::EntryType::Symlink {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(h.mode()?))?;
        }
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Fifo) {
            set_mtime(&dst, h.mtime()?)?;
        }
        let got = std::fs::symlink_metadata(&dst)?.ino();
        if open && ino != Some(got) {
            tracing::warn!(
                "{} came back as inode {got}, not {ino:?}: a program that checks (SQLite) may refuse it",
                rel.display()
            );
        }
        next = next.max(got + 1);
    }
    // Deepest first: making a folder's entries changed its time.
    for (dir, mtime) in folders.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(())
}

/// Creates and removes scratch files until the next inode number is `want` (a fresh tmpfs
/// hands them out in order); `next` is the number the next file gets.
fn use_up_numbers(root: &Path, want: u64, next: &mut u64) -> Result<()> {
    if want <= *next {
        return Ok(());
    }
    if want - *next > MAX_SKIP {
        tracing::warn!("inode {want} is too far ahead to give back ({} now)", *next);
        return Ok(());
    }
    let scratch = root.join(SKIP_NAME);
    while *next < want {
        let f = std::fs::File::create_new(&scratch)?;
        let got = f.metadata()?.ino();
        std::fs::remove_file(&scratch)?;
        *next = got + 1;
    }
    Ok(())
}

/// Sets the modification time by path (utimensat): opening a FIFO to set it would block
/// until a writer came.
fn set_mtime(path: &Path, secs: u64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: utimensat(2) with a valid C string and two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot set the time of {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A scratch tmpfs, unmounted and removed on drop (also when a test panics).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            // SAFETY: geteuid has no preconditions.
            assert_eq!(unsafe { libc::geteuid() }, 0, "mounts a tmpfs: run as root");
            let p = std::env::temp_dir().join(format!(
                "corehop-writable-{tag}-{}-{:08x}",
                std::process::id(),
                rand_u32()
            ));
            mount_fresh(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            crate::containers::unmount(&self.0);
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn rand_u32() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    }

    #[test]
    fn files_come_back_with_content_modes_links_and_open_inodes() {
        let src = Scratch::new("src");
        let dst = Scratch::new("dst");
        let s = &src.0;
        std::fs::create_dir_all(s.join("lib/corehop")).unwrap();
        // Churn, as a database's journals make: the open file's number is far ahead.
        for _ in 0..50 {
            std::fs::write(s.join("journal"), b"x").unwrap();
            std::fs::remove_file(s.join("journal")).unwrap();
        }
        let mut db = std::fs::File::create(s.join("lib/corehop/hss.db")).unwrap();
        db.write_all(b"database").unwrap();
        std::fs::write(s.join("tunnels.json"), b"[]").unwrap();
        std::fs::set_permissions(
            s.join("tunnels.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("lib/corehop/hss.db", s.join("db")).unwrap();
        std::fs::hard_link(s.join("tunnels.json"), s.join("tunnels.bak")).unwrap();
        let fifo = std::ffi::CString::new(s.join("events").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let db_ino = db.metadata().unwrap().ino();

        let image = s.join("../").join(format!("{}.tar", rand_u32()));
        save(s, &[std::process::id() as i32], &image).unwrap();
        restore(&image, &dst.0).unwrap();
        std::fs::remove_file(&image).unwrap();

        let d = &dst.0;
        assert_eq!(
            std::fs::read(d.join("lib/corehop/hss.db")).unwrap(),
            b"database"
        );
        assert_eq!(
            std::fs::metadata(d.join("lib/corehop/hss.db"))
                .unwrap()
                .ino(),
            db_ino,
            "the open file has its inode number back"
        );
        let t = std::fs::metadata(d.join("tunnels.json")).unwrap();
        assert_eq!(t.permissions().mode() & 0o777, 0o600);
        assert_eq!(t.nlink(), 2);
        assert_eq!(
            std::fs::metadata(d.join("tunnels.bak")).unwrap().ino(),
            t.ino()
        );
        assert_eq!(
            std::fs::read_link(d.join("db")).unwrap(),
            Path::new("lib/corehop/hss.db")
        );
        use std::os::unix::fs::FileTypeExt;
        let events = std::fs::symlink_metadata(d.join("events")).unwrap();
        assert!(events.file_type().is_fifo());
        assert_eq!(events.permissions().mode() & 0o777, 0o640);
        assert!(!d.join(SKIP_NAME).exists());
    }

    #[test]
    fn an_image_naming_a_path_outside_is_refused() {
        let dst = Scratch::new("evil");
        let image = std::env::temp_dir().join(format!("corehop-evil-{}.tar", rand_u32()));
        let mut tar = tar::Builder::new(std::fs::File::create(&image).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // `append_data` refuses `..` itself: the name goes into the header raw.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        tar.append(&h, &b"x"[..]).unwrap();
        tar.finish().unwrap();
        let e = restore(&image, &dst.0).unwrap_err();
        std::fs::remove_file(&image).unwrap();
        assert!(format!("{e:#}").contains("outside"), "{e:#}");
    }
}
