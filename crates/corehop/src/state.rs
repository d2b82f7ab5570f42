//! Every EPC function's own view of its UEs, read from the live process, and whether the
//! views agree: what "no UE context or tunnel lost" means after a migration.
//!
//! A function's state file moves with its checkpoint, so reading it would check the copy,
//! not the function. [`fresh_file`] removes the file first and has the process write it
//! again from memory (SIGHUP), so what is compared is what the restored process holds.
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The hosts a function can run on.
pub const HOSTS: [&str; 2] = ["node-a", "node-b"];

pub const MME_STATE: &str = "/run/corehop/mme-ues.json";
pub const SPGW_TUNNELS: &str = "/run/corehop/tunnels.json";
pub const HSS_REGISTRATIONS: &str = "/run/corehop/hss-registrations.json";

/// One HSS registration as the HSS writes it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Registered {
    pub imsi: String,
    pub registration: hss::store::Registration,
}

/// The running container `name`'s init process (the function itself), on whichever host.
fn running_pid(spec: &lab::spec::LabSpec, creds: &Credentials, name: &str) -> Result<i64> {
    for h in HOSTS {
        let ps = agent::Client::connect(lab::agent_addr(spec, h)?, creds)?.ps()?;
        if let Some(i) = ps.iter().find(|i| i.name == name && i.state == "running") {
            if i.runtime == runtime::bundle::Runtime::Vm {
                bail!("{name} runs as a VM: its state is read through the guest agent");
            }
            return i.pid.with_context(|| format!("{name} on {h} has no pid"));
        }
    }
    bail!("{name} runs nowhere")
}

/// A file of a running container as it is now, through its init's root.
pub fn container_file(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    name: &str,
    path: &str,
) -> Result<Vec<u8>> {
    let f = format!("/proc/{}/root{path}", running_pid(spec, creds, name)?);
    std::fs::read(&f).with_context(|| format!("cannot read {f}"))
}

/// `path` as the function `name` writes it on SIGHUP from what it holds in memory.
pub fn fresh_file(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    name: &str,
    path: &str,
) -> Result<Vec<u8>> {
    let pid = running_pid(spec, creds, name)?;
    let f = format!("/proc/{pid}/root{path}");
    match std::fs::remove_file(&f) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {f}")),
    }
    // SAFETY: a signal to a process by pid; the function handles SIGHUP.
    if unsafe { libc::kill(pid as i32, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("SIGHUP to {name}"));
    }
    // Outside any migration window: a short poll for the rename is fine here.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read(&f) {
            Ok(b) => return Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("{name} did not rewrite {path}")),
        }
    }
}

/// What the MME, the SPGW and (when fetched) the HSS hold, each read fresh from its process.
#[derive(Debug, Clone, Default)]
pub struct Views {
    pub mme: Vec<mme::UeView>,
    pub tunnels: Vec<spgw::Tunnel>,
    /// `None`: not compared.
    pub hss: Option<Vec<Registered>>,
}

impl Views {
    pub fn fetch(spec: &lab::spec::LabSpec, creds: &Credentials) -> Result<Views> {
        let mme = fresh_file(spec, creds, "mme", MME_STATE)?;
        let spgw = fresh_file(spec, creds, "spgw", SPGW_TUNNELS)?;
        Ok(Views {
            mme: serde_json::from_slice(&mme).context("the MME's UE contexts")?,
            tunnels: serde_json::from_slice(&spgw).context("the SPGW's tunnel list")?,
            hss: None,
        })
    }

    /// All three views, the HSS's registrations too.
    pub fn fetch_all(spec: &lab::spec::LabSpec, creds: &Credentials) -> Result<Views> {
        let hss = fresh_file(spec, creds, "hss", HSS_REGISTRATIONS)?;
        Ok(Views {
            hss: Some(serde_json::from_slice(&hss).context("the HSS's registrations")?),
            ..Views::fetch(spec, creds)?
        })
    }

    /// [`Views::fetch_all`] until they agree on `ues` UEs or `within` passed: procedures
    /// that were running when the UEs went quiet (a paging, a re-attach) finish meanwhile.
    pub fn fetch_settled(
        spec: &lab::spec::LabSpec,
        creds: &Credentials,
        ues: usize,
        within: Duration,
    ) -> Result<Views> {
        let until = Instant::now() + within;
        loop {
            let v = Views::fetch_all(spec, creds)?;
            let settled = v.mme.len() == ues && v.disagreements().is_empty();
            if settled || Instant::now() > until {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Where the views disagree, one line per UE and problem (empty: they agree). A
    /// registered UE (attached, connected or idle) must have exactly one tunnel with the
    /// same IP and TEIDs, whose eNB end is the MME's while connected and released while
    /// idle; every tunnel must belong to a registered UE; no procedure may be half-done.
    pub fn disagreements(&self) -> Vec<String> {
        use mme::{EcmState, UeState};
        let mut out = Vec::new();
        let mut tunnels: BTreeMap<&str, Vec<&spgw::Tunnel>> = BTreeMap::new();
        for t in &self.tunnels {
            tunnels.entry(t.imsi.as_str()).or_default().push(t);
        }
        let mut seen = std::collections::BTreeSet::new();
        for u in &self.mme {
            if !seen.insert(u.imsi.as_str()) {
                out.push(format!("{}: two MME contexts", u.imsi));
            }
            if !matches!(u.state, UeState::Attached | UeState::Idle) {
                out.push(format!("{}: MME context in {:?}", u.imsi, u.state));
                continue;
            }
            let t = match tunnels.get(u.imsi.as_str()).map(Vec::as_slice) {
                Some([t]) => *t,
                Some(ts) => {
                    out.push(format!("{}: {} tunnels at the SPGW", u.imsi, ts.len()));
                    continue;
                }
                None => {
                    out.push(format!(
                        "{}: registered at the MME, no tunnel at the SPGW",
                        u.imsi
                    ));
                    continue;
                }
            };
            let mut differ = |what: &str, mme: String, spgw: String| {
                if mme != spgw {
                    out.push(format!("{}: {what}: MME {mme}, SPGW {spgw}", u.imsi));
                }
            };
            let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
            differ(
                "UE IP",
                show(u.ue_ip.map(|i| i.to_string())),
                show(t.ue_ip.map(|i| i.to_string())),
            );
            differ(
                "UE IPv6",
                show(u.ue_ipv6.map(|i| i.to_string())),
                show(t.ue_ipv6_prefix.map(|i| i.to_string())),
            );
            differ(
                "SGW S11 TEID",
                show(u.sgw_s11_teid.map(|v| v.to_string())),
                t.sgw_s11_teid.to_string(),
            );
            differ(
                "MME S11 TEID",
                u.mme_s11_teid.to_string(),
                t.mme_s11_teid.to_string(),
            );
            differ(
                "SGW S1-U TEID",
                show(u.sgw_s1u_teid.map(|v| v.to_string())),
                t.sgw_s1u_teid.to_string(),
            );
            match u.ecm_state {
                EcmState::Connected => {
                    differ(
                        "eNB S1-U end",
                        show(
                            u.enb_s1u_teid
                                .zip(u.enb_s1u_addr)
                                .map(|(t, a)| format!("{a}/{t}")),
                        ),
                        show(t.enb_teid.zip(t.enb_addr).map(|(t, a)| format!("{a}/{t}"))),
                    );
                    if t.idle {
                        out.push(format!(
                            "{}: connected at the MME, idle at the SPGW",
                            u.imsi
                        ));
                    }
                }
                EcmState::Idle => {
                    if !t.idle {
                        out.push(format!("{}: idle at the MME, not at the SPGW", u.imsi));
                    }
                }
            }
        }
        for imsi in tunnels.keys() {
            if !seen.contains(imsi) {
                out.push(format!("{imsi}: tunnel at the SPGW, no MME context"));
            }
        }
        if let Some(hss) = &self.hss {
            // The HSS serves whom it last located, until the MME purges the UE; the lab's
            // MME runs with its default Origin-Host.
            let mme_host = mme::Config::default().origin_host;
            let serving: BTreeMap<&str, &hss::store::Registration> = hss
                .iter()
                .filter(|r| !r.registration.purged)
                .map(|r| (r.imsi.as_str(), &r.registration))
                .collect();
            for u in self
                .mme
                .iter()
                .filter(|u| matches!(u.state, UeState::Attached | UeState::Idle))
            {
                match serving.get(u.imsi.as_str()) {
                    Some(r) if r.mme_host == mme_host => {}
                    Some(r) => out.push(format!("{}: the HSS has it at {}", u.imsi, r.mme_host)),
                    None => out.push(format!("{}: registered at the MME, not at the HSS", u.imsi)),
                }
            }
            for imsi in serving.keys() {
                if !seen.contains(imsi) {
                    out.push(format!("{imsi}: registered at the HSS, no MME context"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ue(imsi: &str, ecm: &str, state: &str) -> mme::UeView {
        serde_json::from_value(json!({
            "imsi": imsi, "guti": "", "m_tmsi": 1, "mme_ue_s1ap_id": 1,
            "enb_ue_s1ap_id": if ecm == "Connected" { Some(7) } else { None },
            "enb": null, "state": state, "ecm_state": ecm, "paging": false,
            "ue_ip": "10.45.0.2", "apn": "internet", "mme_s11_teid": 11,
            "sgw_s11_teid": 21, "sgw_s1u_teid": 31, "sgw_s1u_addr": "10.77.1.30",
            "enb_s1u_teid": 41, "enb_s1u_addr": "10.77.0.21", "bearer_active": true,
            "ul_nas_count": 3, "dl_nas_count": 4
        }))
        .unwrap()
    }

    fn tunnel(imsi: &str, idle: bool) -> spgw::Tunnel {
        serde_json::from_value(json!({
            "imsi": imsi, "apn": "internet", "ebi": 5, "ue_ip": "10.45.0.2",
            "mme_s11_teid": 11, "mme_s11_addr": "10.77.1.20", "sgw_s11_teid": 21,
            "sgw_s1u_teid": 31, "enb_teid": 41, "enb_addr": "10.77.0.21", "idle": idle
        }))
        .unwrap()
    }

    fn registered(imsi: &str, purged: bool) -> Registered {
        Registered {
            imsi: imsi.into(),
            registration: hss::store::Registration {
                mme_host: mme::Config::default().origin_host,
                mme_realm: "corehop.lab".into(),
                purged,
            },
        }
    }

    #[test]
    fn agreeing_views_have_no_disagreement() {
        let v = Views {
            mme: vec![ue("1", "Connected", "Attached"), ue("2", "Idle", "Idle")],
            tunnels: vec![tunnel("1", false), tunnel("2", true)],
            hss: Some(vec![
                registered("1", false),
                registered("2", false),
                registered("3", true),
            ]),
        };
        assert_eq!(v.disagreements(), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_disagreement_is_named() {
        let mut moved = tunnel("3", false);
        moved.enb_teid = Some(99);
        let v = Views {
            mme: vec![
                ue("1", "Connected", "Attached"),
                ue("2", "Idle", "Idle"),
                ue("3", "Connected", "Attached"),
                ue("4", "Connected", "WaitContextSetup"),
            ],
            tunnels: vec![tunnel("2", false), moved, tunnel("5", false)],
            hss: Some(vec![
                registered("1", false),
                registered("2", true),
                registered("3", false),
                registered("6", false),
            ]),
        };
        let d = v.disagreements();
        let has = |s: &str| d.iter().any(|l| l.contains(s));
        assert!(has("1: registered at the MME, no tunnel"), "{d:?}");
        assert!(has("2: idle at the MME, not at the SPGW"), "{d:?}");
        assert!(
            has("3: eNB S1-U end: MME 10.77.0.21/41, SPGW 10.77.0.21/99"),
            "{d:?}"
        );
        assert!(has("4: MME context in WaitContextSetup"), "{d:?}");
        assert!(has("5: tunnel at the SPGW, no MME context"), "{d:?}");
        assert!(has("2: registered at the MME, not at the HSS"), "{d:?}");
        assert!(has("6: registered at the HSS, no MME context"), "{d:?}");
        assert_eq!(d.len(), 7, "{d:?}");
    }
}
