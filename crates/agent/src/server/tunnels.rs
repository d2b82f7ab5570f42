//! The global proactive GTP Tunnel List Handler's feed: every change of a running function's
//! tunnel list goes to the tunnel master.
use super::*;

impl Agent {
    /// Pushes every change of a running function's tunnel list to the master.
    pub(super) fn watch_tunnel_lists(&self) {
        let Some(master) = self.cfg.master else {
            return;
        };
        let mut seen: std::collections::HashMap<String, (std::time::SystemTime, u64)> =
            Default::default();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            // Not while a checkpoint or restore runs: a just-restored function still holds
            // its checkpoint's (older) list until it adopts the one it is handed.
            let Ok(_busy) = self.busy.try_lock() else {
                continue;
            };
            let Ok(list) = self.ps() else { continue };
            for c in list.into_iter().filter(|c| c.state == "running") {
                let Ok((_, spec)) = self.existing(&c.name) else {
                    continue;
                };
                let (Some(tl), Some(pid)) = (spec.tunnel_list, c.pid) else {
                    continue;
                };
                let path = TunnelListSpec::host_path(pid, &tl.file);
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
                if seen.get(&c.name) == Some(&stamp) {
                    continue;
                }
                let Ok(tunnels) = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice(&b)?))
                else {
                    continue;
                };
                match crate::master::put(master, &self.cfg.tls, &c.name, &self.cfg.host, tunnels) {
                    Ok(()) => {
                        seen.insert(c.name, stamp);
                    }
                    Err(e) => tracing::warn!(
                        "cannot report {}'s tunnel list to the master: {e:#}",
                        c.name
                    ),
                }
            }
        }
    }
}
