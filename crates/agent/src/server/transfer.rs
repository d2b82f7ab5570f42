//! Shipping image rounds agent to agent, whole or as a delta against an earlier round.
use super::*;

impl Agent {
    pub(super) fn push(
        &self,
        name: &str,
        round: &str,
        to: SocketAddr,
        base: Option<&str>,
    ) -> Result<OpStats> {
        let (dir, _) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if !images.is_dir() {
            bail!(
                "no image round {round:?} of {name:?} on host {}",
                self.cfg.host
            );
        }
        let t = Instant::now();
        // The earlier round sits here exactly as the destination rebuilt it (checked by
        // digest when it arrived), so comparing against our copy finds what it lacks.
        let (data, round_sha256) = match base {
            Some(b) => {
                let (data, digest) = delta::encode(&images, &round_dir(&dir, b)?)?;
                (data, Some(digest))
            }
            None => {
                let mut tar = tar::Builder::new(Vec::new());
                // A pre-dump's `parent` link must arrive as a link, not as a second copy.
                tar.follow_symlinks(false);
                tar.append_dir_all(".", &images)?;
                (tar.into_inner()?, None)
            }
        };
        let sha = hex::encode(Sha256::digest(&data));
        let mut peer = Client::connect(to, &self.cfg.token)?;
        peer.call_with_body::<()>(
            &Request::Receive {
                name: name.into(),
                round: round.into(),
                size: data.len() as u64,
                sha256: sha,
                base: base.map(str::to_string),
                round_sha256,
            },
            &data,
        )
        .with_context(|| format!("transfer of {name:?} to {to} failed"))?;
        Ok(OpStats {
            ms: ms(t),
            bytes: data.len() as u64,
            ..Default::default()
        })
    }

    pub(super) fn receive(
        &self,
        name: &str,
        round: &str,
        size: u64,
        sha256: &str,
        delta: Option<(String, String)>,
        s: &mut TcpStream,
    ) -> Result<()> {
        if size > MAX_IMAGE_BYTES {
            bail!("refusing an image of {size} bytes (limit {MAX_IMAGE_BYTES})");
        }
        // Read the body first, whatever happens next, so the connection stays in step; a
        // sender that goes silent (link cut) fails the transfer instead of hanging it.
        let mut data = Vec::with_capacity(size as usize);
        s.set_read_timeout(Some(crate::client::STALL_TIMEOUT))?;
        let read = s.take(size).read_to_end(&mut data);
        s.set_read_timeout(Some(IDLE_TIMEOUT))?;
        read.context("the image stopped arriving")?;
        if data.len() as u64 != size {
            bail!(
                "image of {name:?} truncated: {} of {size} bytes arrived",
                data.len()
            );
        }
        let (dir, _) = self.existing(name)?;
        let got = hex::encode(Sha256::digest(&data));
        if got != sha256 {
            bail!("image of {name:?} is corrupt: sha256 {got} != {sha256}; not restoring it");
        }
        let images = round_dir(&dir, round)?;
        let tmp = dir.join("images").join(format!(".{round}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        match delta {
            Some((base, round_sha256)) => {
                let got = delta::apply(&data, &round_dir(&dir, &base)?, &tmp, MAX_IMAGE_BYTES)
                    .with_context(|| format!("cannot rebuild round {round:?} of {name:?}"))?;
                if got != round_sha256 {
                    let _ = std::fs::remove_dir_all(&tmp);
                    bail!("round {round:?} of {name:?} rebuilt from {base:?} does not match the source's (sha256 {got} != {round_sha256}); not restoring it");
                }
            }
            None => tar::Archive::new(&data[..])
                .unpack(&tmp)
                .context("cannot unpack the image (disk full?)")?,
        }
        let _ = std::fs::remove_dir_all(&images);
        std::fs::rename(&tmp, &images)?;
        Ok(())
    }
}
