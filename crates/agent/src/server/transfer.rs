//! Shipping image rounds agent to agent, whole or as a delta against an earlier round.
use super::*;

impl Agent {
    /// A connection to the agent at `to`: the one an earlier call left, if it is still open.
    fn peer(&self, to: SocketAddr) -> Result<Client> {
        match lock(&self.peers).remove(&to) {
            Some(c) if c.is_open() => Ok(c),
            _ => Client::connect(to, &self.cfg.tls),
        }
    }

    /// Opens (or checks) the connection to `to` that the next [`Agent::push`] there uses.
    pub(super) fn dial(&self, to: SocketAddr) -> Result<()> {
        let c = self.peer(to)?;
        lock(&self.peers).insert(to, c);
        Ok(())
    }

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
        let size = data.len() as u64;
        let claim = image_claim(name, round, size, &sha, base, round_sha256.as_deref());
        let req = Request::Receive {
            name: name.into(),
            round: round.into(),
            size,
            sha256: sha,
            base: base.map(str::to_string),
            round_sha256,
            from: self.cfg.host.clone(),
            signature: self.cfg.tls.sign(&claim)?,
        };
        let mut peer = self.peer(to)?;
        peer.call_with_body::<()>(&req, &data)
            .with_context(|| format!("transfer of {name:?} to {to} failed"))?;
        lock(&self.peers).insert(to, peer);
        Ok(OpStats {
            ms: ms(t),
            bytes: data.len() as u64,
            ..Default::default()
        })
    }

    /// `delta`: the base round and the rebuilt round's sha256.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive(
        &self,
        name: &str,
        round: &str,
        size: u64,
        sha256: &str,
        delta: Option<(String, String)>,
        from: &str,
        signature: &tls::Signature,
        s: &mut ServerStream,
    ) -> Result<()> {
        if size > MAX_IMAGE_BYTES {
            bail!("refusing an image of {size} bytes (limit {MAX_IMAGE_BYTES})");
        }
        // Before a byte of it is read: only the agent that dumped it may send it.
        let claim = image_claim(
            name,
            round,
            size,
            sha256,
            delta.as_ref().map(|d| d.0.as_str()),
            delta.as_ref().map(|d| d.1.as_str()),
        );
        tls::verify_agent(&tls::peer(&s.conn)?, from, &claim, signature)
            .with_context(|| format!("refusing the image of {name:?}"))?;
        // Read the body first, whatever happens next, so the connection stays in step; a
        // sender that goes silent (link cut) fails the transfer instead of hanging it.
        let mut data = Vec::with_capacity(size as usize);
        s.sock
            .set_read_timeout(Some(crate::client::STALL_TIMEOUT))?;
        let read = s.take(size).read_to_end(&mut data);
        s.sock.set_read_timeout(Some(IDLE_TIMEOUT))?;
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
