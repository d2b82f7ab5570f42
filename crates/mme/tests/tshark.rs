//! The new EMM procedures on the wire, as the MME core sends and takes them: every
//! S1AP PDU of identification, an ATTACH ACCEPT retransmitted on T3450, GUTI
//! reallocation, a tracking area update with a new GUTI, a TAU REJECT, and a
//! network-initiated detach of a paged UE, written to a pcap (one S1AP PDU per record
//! on DLT 147) and decoded by tshark with the null cipher (the UE offers only EEA0):
//! nothing malformed, no expert error, and the fields set are the ones shown.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::harness::*;
use common::{Reaction, TestUe, PLMN};
use mme::{Action, MmeCore};
use proto_nas::UpdateType;
use proto_s1ap::{self as s1ap, RRCEstablishmentCause, S1ap, Tai};
use proto_sctp::pcap::{PcapWriter, LINKTYPE_USER0};

/// The core, with every S1AP PDU in and out recorded in order.
struct Wire {
    c: MmeCore,
    pdus: Vec<Vec<u8>>,
    now: Instant,
}

impl Wire {
    fn up(&mut self, m: S1ap) {
        let pdu = s1ap::encode(&m).unwrap();
        self.c.on_s1ap(self.now, A, &pdu);
        self.pdus.push(pdu);
    }

    /// What the core sent: the S1AP messages (recorded), and the rest.
    fn down(&mut self) -> (Vec<S1ap>, Vec<Action>) {
        let mut s1 = Vec::new();
        let mut other = Vec::new();
        for a in self.c.take_actions() {
            match a {
                Action::S1ap { pdu, .. } => {
                    s1.push(s1ap::decode(&pdu).unwrap());
                    self.pdus.push(pdu);
                }
                a => other.push(a),
            }
        }
        (s1, other)
    }

    /// The one downlink NAS PDU just sent, answered by the UE.
    fn answer(&mut self, ue: &mut TestUe, id: u32) {
        let (out, _) = self.down();
        let (_, nas) = downlink(&out);
        let Reaction::Reply(up) = ue.on_downlink(&nas) else {
            panic!("{out:?}")
        };
        self.up(uplink(id, up));
    }
}

#[test]
fn tshark_decodes_the_emm_procedures() {
    let mut w = Wire {
        c: core_with(mme::Config {
            tacs: vec![1, 7],
            ..mme::Config::default()
        }),
        pdus: Vec::new(),
        now: t0(),
    };
    w.up(S1ap::S1SetupRequest(s1ap::S1SetupRequest {
        plmn: PLMN,
        enb_id: 1,
        enb_name: Some("tshark".into()),
        tacs: vec![1, 7],
    }));
    w.down();
    let mut ue = TestUe::example(80);
    ue.only_null_ciphering();
    // Identification: an attach by a GUTI of another MME.
    let foreign = proto_nas::Guti {
        plmn: PLMN,
        mme_group_id: 1,
        mme_code: 9,
        m_tmsi: 0x1234,
    };
    w.up(S1ap::InitialUeMessage {
        enb_ue_id: ENB_UE,
        nas: ue.attach_request_by_guti(&foreign),
        tai: tai(),
        ecgi: ecgi(),
        s_tmsi: None,
        rrc_cause: RRCEstablishmentCause::mo_Signalling,
    });
    let id = view(&w.c, 1).mme_ue_s1ap_id;
    w.answer(&mut ue, id);
    // Authentication, security mode (EEA0), location, session.
    let (_, acts) = w.down();
    assert!(matches!(&acts[..], [Action::Air { .. }]));
    w.c.on_aia(w.now, id, Ok(aia_for(&ue)));
    w.answer(&mut ue, id);
    w.answer(&mut ue, id);
    w.down();
    w.c.on_ula(w.now, id, Ok(ula()));
    w.down();
    w.c.on_s11(w.now, id, Ok(create_session_response()));
    let (out, _) = w.down();
    let [S1ap::InitialContextSetupRequest(ics)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(matches!(
        ue.on_downlink(ics.erabs[0].nas.as_ref().unwrap()),
        Reaction::Accepted { .. }
    ));
    w.up(ics_response(id, 0x77));
    // T3450 expires once: the ATTACH ACCEPT again, with the next COUNT.
    w.now += Duration::from_secs(6);
    w.c.on_timer(w.now);
    let (out, _) = w.down();
    let (_, again) = downlink(&out);
    assert!(matches!(ue.on_downlink(&again), Reaction::Accepted { .. }));
    let complete = ue.attach_complete(5);
    w.up(uplink(id, complete));
    // GUTI reallocation.
    w.c.reallocate_guti(id, w.now).unwrap();
    w.answer(&mut ue, id);
    // Idle, then a periodic TAU from TAC 7: a new GUTI, completed.
    w.up(S1ap::UeContextReleaseRequest {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
        cause: s1ap::causes::user_inactivity(),
    });
    w.down();
    w.up(S1ap::UeContextReleaseComplete {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
    });
    let tau = ue.tau_request(UpdateType::Periodic, false);
    let tac7 = Tai { plmn: PLMN, tac: 7 };
    w.up(S1ap::InitialUeMessage {
        enb_ue_id: ENB_UE,
        nas: tau.clone(),
        tai: tac7,
        ecgi: ecgi(),
        s_tmsi: Some(s_tmsi_of(&ue)),
        rrc_cause: RRCEstablishmentCause::mo_Signalling,
    });
    w.answer(&mut ue, id);
    w.down();
    w.up(S1ap::UeContextReleaseComplete {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
    });
    // The same request again names a GUTI that is gone now: TAU REJECT #9.
    w.up(S1ap::InitialUeMessage {
        enb_ue_id: ENB_UE + 1,
        nas: tau,
        tai: tac7,
        ecgi: ecgi(),
        s_tmsi: None,
        rrc_cause: RRCEstablishmentCause::mo_Signalling,
    });
    w.down();
    // Network detach of the idle UE: paging, its SERVICE REQUEST, DETACH REQUEST.
    w.c.network_detach(id, true, w.now).unwrap();
    w.down();
    let sr = ue.service_request();
    w.up(initial_ue(
        sr,
        s_tmsi_of(&ue),
        RRCEstablishmentCause::mt_Access,
    ));
    let (out, _) = w.down();
    let [S1ap::InitialContextSetupRequest(_), S1ap::DownlinkNasTransport { nas, .. }] = &out[..]
    else {
        panic!("{out:?}")
    };
    let Reaction::Reply(accept) = ue.on_downlink(nas) else {
        panic!()
    };
    w.up(uplink(id, accept));

    let mut pcap = PcapWriter::with_linktype(LINKTYPE_USER0);
    for (i, p) in w.pdus.iter().enumerate() {
        pcap.record(Duration::from_millis(1_700_000_000_000 + i as u64), p);
    }
    let path = std::env::temp_dir().join(format!("mme-emm-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap.take()).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("tshark")
            .args([
                "-o",
                r#"uat:user_dlts:"User 0 (DLT=147)","s1ap","0","","0","""#,
                "-o",
                "nas-eps.null_decipher:TRUE",
                "-r",
            ])
            .arg(&path)
            .args(args)
            .output()
            .expect("tshark must be installed (make setup installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verbose = run(&["-V"]);
    let errors = run(&["-Y", "_ws.malformed || _ws.expert.severity == error"]);
    let seqs = run(&[
        "-Y",
        "nas_eps.nas_msg_emm_type == 0x42",
        "-T",
        "fields",
        "-e",
        "nas_eps.seq_no",
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet in:\n{verbose}"
    );
    assert!(errors.trim().is_empty(), "expert errors:\n{errors}");
    for needle in [
        "Identity request",
        "Identity type 2: IMSI (1)",
        "Identity response",
        "Mobile identity - IMSI (001010000000080)",
        "Attach accept",
        "GUTI reallocation command",
        "GUTI reallocation complete",
        "Tracking area update request",
        "EPS update type value: Periodic updating (3)",
        "Tracking area update accept",
        "GPRS Timer - T3412 value",
        "Tracking area code(TAC): 7",
        "Tracking area update complete",
        "Tracking area update reject",
        "Cause: UE identity cannot be derived by the network (9)",
        "Paging",
        "Detach request",
        "Detach Type: Re-attach required (1)",
        "Detach accept",
        "Security header type: Integrity protected and ciphered (2)",
    ] {
        assert!(verbose.contains(needle), "{needle} not decoded:\n{verbose}");
    }
    // The ATTACH ACCEPT went out twice, each with its own NAS sequence number.
    let seqs: Vec<&str> = seqs.lines().map(|l| l.trim()).collect();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert_ne!(seqs[0], seqs[1], "a retransmission has a new COUNT");
}
