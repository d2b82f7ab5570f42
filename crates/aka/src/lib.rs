//! EPS-AKA primitives shared by the HSS (vector generation), the MME (NAS keys, KeNB) and the
//! RAN emulator (USIM side).
//!
//! * Milenage f1, f1*, f2, f3, f4, f5, f5* (TS 35.206) with OPc derived from OP.
//! * EPS authentication vectors with KASME (TS 33.401 Annex A.2).
//! * USIM-side AUTN verification and SQN extraction, AUTS for re-synchronisation (TS 33.102 6.3.3).
//! * NAS keys KNASenc / KNASint (TS 33.401 A.7), KeNB (A.3) and the handover's NH (A.4).
//!
//! Milenage is implemented here on top of the RustCrypto `aes` crate rather than taken from the
//! `milenage` crate (its API keeps the last outputs in a mutable struct behind `Option` getters,
//! which makes the pure "inputs -> vector" functions below awkward) or from `oxirush-security`
//! (it pulls elliptic-curve crates for 5G SUCI that no corehop function needs). The algorithm is
//! ~40 lines and is pinned by all six TS 35.208 conformance test sets in the tests below.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Largest SQN value: SQN is a 48-bit counter (TS 33.102 C.1).
pub const SQN_MAX: u64 = (1 << 48) - 1;

/// Serving network identity of the lab PLMN 001/01 as encoded in TS 24.301 / TS 23.003
/// (MCC digit 2|1, MNC digit 3|MCC digit 3, MNC digit 2|1; a 2-digit MNC has filler F).
pub const PLMN_001_01: [u8; 3] = [0x00, 0xf1, 0x10];

/// NAS algorithm type distinguishers (TS 33.401 A.7, table A.7-1).
const NAS_ENC_ALG: u8 = 0x01;
const NAS_INT_ALG: u8 = 0x02;

/// FC values of the TS 33.220 / TS 33.401 key derivation function.
const FC_KASME: u8 = 0x10;
const FC_KENB: u8 = 0x11;
const FC_NH: u8 = 0x12;
const FC_ALG_KEY: u8 = 0x15;

/// AMF used inside AUTS: TS 33.102 6.3.3 fixes it to all zeros ("dummy" AMF*).
const AMF_RESYNC: [u8; 2] = [0, 0];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AkaError {
    /// The MAC in AUTN (or AUTS) does not match what K/OPc give: wrong key, or not our network.
    #[error("MAC failure: the network authentication code does not match the subscriber key")]
    MacFailure,
    /// MCC/MNC that are not 3 / 2-3 decimal digits.
    #[error("invalid PLMN: MCC {mcc:?} MNC {mnc:?} (MCC needs 3 digits, MNC 2 or 3)")]
    InvalidPlmn { mcc: String, mnc: String },
}

/// Outputs of f2, f3, f4 and f5 for one RAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct F2345 {
    pub res: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    pub ak: [u8; 6],
}

/// Milenage keyed with K and OPc. Cheap to build; holds the expanded AES key schedule.
#[derive(Clone)]
pub struct Milenage {
    cipher: Aes128,
    opc: [u8; 16],
}

impl Milenage {
    pub fn new(k: &[u8; 16], opc: &[u8; 16]) -> Self {
        Milenage {
            cipher: Aes128::new(&(*k).into()),
            opc: *opc,
        }
    }

    /// Builds from OP (operator variant algorithm configuration field) by deriving OPc.
    pub fn with_op(k: &[u8; 16], op: &[u8; 16]) -> Self {
        Self::new(k, &compute_opc(k, op))
    }

    pub fn opc(&self) -> [u8; 16] {
        self.opc
    }

    fn e(&self, input: [u8; 16]) -> [u8; 16] {
        let mut block = aes::Block::from(input);
        self.cipher.encrypt_block(&mut block);
        block.into()
    }

    /// TEMP = E_K(RAND xor OPc), shared by every function.
    fn temp(&self, rand: &[u8; 16]) -> [u8; 16] {
        self.e(xor16(rand, &self.opc))
    }

    /// OUT1 = E_K(TEMP xor rot(IN1 xor OPc, r1) xor c1) xor OPc with r1 = 64, c1 = 0.
    fn out1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 16] {
        let mut in1 = [0u8; 16];
        in1[0..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..16].copy_from_slice(amf);
        let rotated = rot(&xor16(&in1, &self.opc), 8);
        xor16(&self.e(xor16(&self.temp(rand), &rotated)), &self.opc)
    }

    /// OUT2..OUT5 = E_K(rot(TEMP xor OPc, r) xor c) xor OPc; `c` is the last byte of the
    /// constant (c2..c5 = 1, 2, 4, 8), `r_bytes` the rotation in bytes (r2..r5 = 0, 32, 64, 96 bits).
    fn out_n(&self, temp: &[u8; 16], r_bytes: usize, c: u8) -> [u8; 16] {
        let mut x = rot(&xor16(temp, &self.opc), r_bytes);
        x[15] ^= c;
        xor16(&self.e(x), &self.opc)
    }

    /// f1: network authentication code MAC-A.
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        first8(&self.out1(rand, sqn, amf))
    }

    /// f1*: re-synchronisation message authentication code MAC-S.
    pub fn f1_star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&out[8..16]);
        mac
    }

    /// f2 (RES), f3 (CK), f4 (IK) and f5 (AK) in one go, sharing TEMP.
    pub fn f2345(&self, rand: &[u8; 16]) -> F2345 {
        let temp = self.temp(rand);
        let out2 = self.out_n(&temp, 0, 1);
        let mut res = [0u8; 8];
        res.copy_from_slice(&out2[8..16]);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out2[0..6]);
        F2345 {
            res,
            ck: self.out_n(&temp, 4, 2),
            ik: self.out_n(&temp, 8, 4),
            ak,
        }
    }

    /// f5*: anonymity key used to conceal SQN_MS in AUTS.
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let out5 = self.out_n(&self.temp(rand), 12, 8);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out5[0..6]);
        ak
    }
}

/// OPc = E_K(OP) xor OP (TS 35.206 4.1).
pub fn compute_opc(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
    let m = Milenage {
        cipher: Aes128::new(&(*k).into()),
        opc: [0; 16],
    };
    xor16(&m.e(*op), op)
}

/// One E-UTRAN authentication vector as carried in S6a E-UTRAN-Vector (TS 29.272 7.3.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vector {
    pub rand: [u8; 16],
    pub xres: [u8; 8],
    pub autn: [u8; 16],
    pub kasme: [u8; 32],
}

/// Generates an EPS vector for the lab PLMN 001/01.
pub fn generate_vector(
    k: &[u8; 16],
    opc: &[u8; 16],
    amf: &[u8; 2],
    sqn: u64,
    rand: &[u8; 16],
) -> Vector {
    generate_vector_for(k, opc, amf, sqn, rand, &PLMN_001_01)
}

/// Generates an EPS vector for the serving network `sn_id` (encoded PLMN, see [`plmn_id`]).
/// SQN is taken modulo 2^48.
pub fn generate_vector_for(
    k: &[u8; 16],
    opc: &[u8; 16],
    amf: &[u8; 2],
    sqn: u64,
    rand: &[u8; 16],
    sn_id: &[u8; 3],
) -> Vector {
    let m = Milenage::new(k, opc);
    let sqn = sqn_to_bytes(sqn);
    let f = m.f2345(rand);
    let mac_a = m.f1(rand, &sqn, amf);
    let sqn_xor_ak = xor6(&sqn, &f.ak);
    let mut autn = [0u8; 16];
    autn[0..6].copy_from_slice(&sqn_xor_ak);
    autn[6..8].copy_from_slice(amf);
    autn[8..16].copy_from_slice(&mac_a);
    Vector {
        rand: *rand,
        xres: f.res,
        autn,
        kasme: derive_kasme(&f.ck, &f.ik, sn_id, &sqn_xor_ak),
    }
}

/// What the USIM derives from a valid challenge: (RES, CK, IK, SQN).
pub type UsimAuth = ([u8; 8], [u8; 16], [u8; 16], u64);

/// USIM side of AKA: recovers SQN from AUTN and checks MAC-A. Returns (RES, CK, IK, SQN).
/// Whether SQN is fresh is the caller's decision (it keeps SQN_MS); on a stale SQN it answers
/// with [`generate_auts`].
pub fn check_autn(
    k: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    autn: &[u8; 16],
) -> Result<UsimAuth, AkaError> {
    let m = Milenage::new(k, opc);
    let f = m.f2345(rand);
    let (sqn_xor_ak, amf, mac) = split_autn(autn);
    let sqn = xor6(&sqn_xor_ak, &f.ak);
    if !ct_eq(&m.f1(rand, &sqn, &amf), &mac) {
        return Err(AkaError::MacFailure);
    }
    Ok((f.res, f.ck, f.ik, sqn_from_bytes(&sqn)))
}

/// KASME as the UE computes it after [`check_autn`]: SQN xor AK is the first 6 bytes of AUTN.
pub fn kasme_from_autn(ck: &[u8; 16], ik: &[u8; 16], sn_id: &[u8; 3], autn: &[u8; 16]) -> [u8; 32] {
    derive_kasme(ck, ik, sn_id, &split_autn(autn).0)
}

/// AUTS = (SQN_MS xor f5*) || f1*(SQN_MS, AMF = 0), sent by the USIM on a synchronisation
/// failure (TS 33.102 6.3.3).
pub fn generate_auts(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16], sqn_ms: u64) -> [u8; 14] {
    let m = Milenage::new(k, opc);
    let sqn = sqn_to_bytes(sqn_ms);
    let mut auts = [0u8; 14];
    auts[0..6].copy_from_slice(&xor6(&sqn, &m.f5_star(rand)));
    auts[6..14].copy_from_slice(&m.f1_star(rand, &sqn, &AMF_RESYNC));
    auts
}

/// HSS side of re-synchronisation: verifies AUTS (from S6a Re-Synchronization-Info =
/// RAND || AUTS) and returns SQN_MS, from which the HSS restarts its counter.
pub fn verify_auts(
    k: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    auts: &[u8; 14],
) -> Result<u64, AkaError> {
    let m = Milenage::new(k, opc);
    let mut concealed = [0u8; 6];
    concealed.copy_from_slice(&auts[0..6]);
    let sqn = xor6(&concealed, &m.f5_star(rand));
    if !ct_eq(&m.f1_star(rand, &sqn, &AMF_RESYNC), &auts[6..14]) {
        return Err(AkaError::MacFailure);
    }
    Ok(sqn_from_bytes(&sqn))
}

/// The generic KDF of TS 33.220 B.2 used by TS 33.401 Annex A:
/// HMAC-SHA-256(key, FC || P0 || L0 || P1 || L1 ...), Li = length of Pi as 2 bytes.
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> [u8; 32] {
    // HMAC is defined for keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA-256 accepts keys of any length");
    mac.update(&[fc]);
    for p in params {
        mac.update(p);
        // Parameters here are at most a few bytes; the spec encodes the length on 16 bits.
        mac.update(&(p.len() as u16).to_be_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// KASME = KDF(CK || IK, FC 0x10, SN id, SQN xor AK) (TS 33.401 A.2).
pub fn derive_kasme(
    ck: &[u8; 16],
    ik: &[u8; 16],
    sn_id: &[u8; 3],
    sqn_xor_ak: &[u8; 6],
) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(ck);
    key[16..].copy_from_slice(ik);
    kdf(&key, FC_KASME, &[sn_id, sqn_xor_ak])
}

/// KNASenc for the NAS ciphering algorithm `eea` (0 = EEA0, 1 = 128-EEA1, 2 = 128-EEA2, ...),
/// TS 33.401 A.7: the 128 least significant bits of the KDF output.
pub fn knas_enc(kasme: &[u8; 32], eea: u8) -> [u8; 16] {
    last16(&kdf(kasme, FC_ALG_KEY, &[&[NAS_ENC_ALG], &[eea]]))
}

/// KNASint for the NAS integrity algorithm `eia` (0 = EIA0, 1 = 128-EIA1, 2 = 128-EIA2, ...).
pub fn knas_int(kasme: &[u8; 32], eia: u8) -> [u8; 16] {
    last16(&kdf(kasme, FC_ALG_KEY, &[&[NAS_INT_ALG], &[eia]]))
}

/// KeNB = KDF(KASME, FC 0x11, uplink NAS COUNT) (TS 33.401 A.3), what the MME sends to the eNB.
pub fn kenb(kasme: &[u8; 32], uplink_nas_count: u32) -> [u8; 32] {
    kdf(kasme, FC_KENB, &[&uplink_nas_count.to_be_bytes()])
}

/// NH = KDF(KASME, FC 0x12, SYNC-input) (TS 33.401 A.4): the next hop key of a handover.
/// SYNC-input is the KeNB for the first NH (NCC 1) and the previous NH after that.
pub fn nh(kasme: &[u8; 32], sync_input: &[u8; 32]) -> [u8; 32] {
    kdf(kasme, FC_NH, &[sync_input])
}

/// Encodes a PLMN (e.g. "001", "01") as the 3-byte identity of TS 23.003 / TS 24.008 10.5.1.13.
pub fn plmn_id(mcc: &str, mnc: &str) -> Result<[u8; 3], AkaError> {
    let err = || AkaError::InvalidPlmn {
        mcc: mcc.to_string(),
        mnc: mnc.to_string(),
    };
    let digits = |s: &str| -> Option<Vec<u8>> {
        s.bytes()
            .map(|b| b.is_ascii_digit().then(|| b - b'0'))
            .collect()
    };
    let (c, n) = (digits(mcc).ok_or_else(err)?, digits(mnc).ok_or_else(err)?);
    match (c.as_slice(), n.as_slice()) {
        ([c1, c2, c3], [n1, n2]) => Ok([c2 << 4 | c1, 0xf0 | c3, n2 << 4 | n1]),
        ([c1, c2, c3], [n1, n2, n3]) => Ok([c2 << 4 | c1, n3 << 4 | c3, n2 << 4 | n1]),
        _ => Err(err()),
    }
}

/// SQN as the 6 big-endian bytes used on the wire and inside Milenage (modulo 2^48).
pub fn sqn_to_bytes(sqn: u64) -> [u8; 6] {
    let b = (sqn & SQN_MAX).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

pub fn sqn_from_bytes(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

fn split_autn(autn: &[u8; 16]) -> ([u8; 6], [u8; 2], [u8; 8]) {
    let mut sqn_xor_ak = [0u8; 6];
    let mut amf = [0u8; 2];
    let mut mac = [0u8; 8];
    sqn_xor_ak.copy_from_slice(&autn[0..6]);
    amf.copy_from_slice(&autn[6..8]);
    mac.copy_from_slice(&autn[8..16]);
    (sqn_xor_ak, amf, mac)
}

/// Cyclic left rotation by a whole number of bytes (all Milenage r constants are multiples of 8).
fn rot(x: &[u8; 16], r_bytes: usize) -> [u8; 16] {
    let mut out = *x;
    out.rotate_left(r_bytes);
    out
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn xor6(a: &[u8; 6], b: &[u8; 6]) -> [u8; 6] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn first8(x: &[u8; 16]) -> [u8; 8] {
    std::array::from_fn(|i| x[i])
}

fn last16(x: &[u8; 32]) -> [u8; 16] {
    std::array::from_fn(|i| x[16 + i])
}

/// Comparison without an early exit, so MAC checks do not leak how many bytes matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
