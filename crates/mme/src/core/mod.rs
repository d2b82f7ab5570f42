//! The MME's logic without I/O: eNBs (S1 Setup), UE contexts and the EMM procedures
//! (attach, identification, GUTI reallocation, tracking area update, detach every
//! way) across S1AP, NAS, S6a and S11, ECM-IDLE (release, service request, paging)
//! and the NAS timers.
//!
//! Inputs are S1AP PDUs and the answers of the HSS and SPGW; outputs are [`Action`]s
//! the I/O shell executes. Everything (NAS security contexts with their COUNTs,
//! TEIDs, ids) lives in this struct, i.e. in process memory, so a CRIU checkpoint of
//! the MME carries it. A bad PDU or NAS message is logged and dropped; it never
//! touches other UEs.
//!
//! One file per concern over this one shared state, as Open5GS splits its MME:
//! `context` (the UE and eNB contexts), `s1ap` (the eNB's messages), `emm` (attach,
//! authentication, security mode, identification, GUTI reallocation, what a
//! procedure's last timer expiry does), `tau` (tracking area update), `detach`
//! (UE-initiated, network-initiated, implicit), `esm` (the PDN connection and its default
//! bearer), `idle` (S1 release to ECM-IDLE, service request, paging), `timers` (every
//! per-UE timer: T3450, T3460, T3470, T3422, T3413, mobile reachable), `s6a` (the
//! HSS's answers and requests: Cancel Location; the Purge UE after a detach), `s11` (the SPGW's answers and our requests) and `handover` (X2 path
//! switch and S1 handover between the eNBs, with the NH/NCC chain).
//!
//! Every input brings the time (`now`); timers started while handling it count from it.

use std::collections::BTreeMap;
use std::time::Instant;

use proto_gtpv2c as gtp;
use proto_gtpv2c::transaction::RequestId;
use proto_sctp::AssocId;

use crate::Config;

mod context;
mod detach;
mod emm;
mod esm;
mod handover;
mod idle;
mod s11;
mod s1ap;
mod s6a;
mod tau;
mod timers;

pub use context::{EcmState, EnbView, UeState, UeView};
use context::{Enb, Ue};
pub use handover::HandoverPhase;
pub use timers::{EmmProcedure, TimerStats};

/// What the I/O shell must do. Actions live for one loop turn, so the size of the
/// S11 variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    S1ap {
        assoc: AssocId,
        stream: u16,
        pdu: Vec<u8>,
    },
    /// S6a Authentication-Information-Request for `ue` (the MME UE S1AP ID).
    Air {
        ue: u32,
        imsi: String,
        resync: Option<[u8; 30]>,
    },
    /// S6a Update-Location-Request.
    Ulr { ue: u32, imsi: String },
    /// S6a Purge-UE-Request: the UE's context is gone after its detach, so the HSS may
    /// mark it purged here (TS 29.272 5.2.3.1). Nothing in the core waits for the answer.
    Pur { imsi: String },
    /// S11 message to the SPGW, to the SGW's control TEID `teid` (0 for a new
    /// session): a request, or a Downlink Data Notification Failure Indication, which
    /// nothing answers.
    S11 {
        ue: u32,
        teid: u32,
        msg: gtp::Message,
    },
    /// The answer, to the SGW's control TEID `teid`, to the S11 request `id` of the
    /// SPGW answered later than it arrived (Create Bearer Response, after the eNB and
    /// the UE set the bearer up); the shell's Responder numbers and caches it.
    S11Answer {
        id: RequestId,
        teid: u32,
        msg: gtp::Message,
    },
}

pub struct MmeCore {
    plmn: [u8; 3],
    cfg: Config,
    enbs: BTreeMap<AssocId, Enb>,
    ues: BTreeMap<u32, Ue>,
    next_mme_ue_id: u32,
    next_m_tmsi: u32,
    actions: Vec<Action>,
    changed: bool,
    /// The time of the input being handled.
    now: Instant,
    timer_stats: TimerStats,
}

impl MmeCore {
    pub fn new(cfg: Config) -> anyhow::Result<MmeCore> {
        cfg.validate()?;
        Ok(MmeCore {
            plmn: cfg.plmn()?,
            cfg,
            enbs: BTreeMap::new(),
            ues: BTreeMap::new(),
            next_mme_ue_id: 1,
            next_m_tmsi: 0xc000_0001,
            actions: Vec::new(),
            changed: false,
            // Until the first input, which brings its own time.
            now: Instant::now(),
            timer_stats: TimerStats::default(),
        })
    }

    /// Actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Whether UE state changed since the last call (the JSON dump must be rewritten).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}
