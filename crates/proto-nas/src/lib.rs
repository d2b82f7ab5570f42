//! EPS NAS (TS 24.301) for both ends of S1-MME: the MME and the UE emulator.
//!
//! The codec is `oxirush-nas` (checked here: it decodes/encodes every EMM/ESM message
//! we need, round-trips Wireshark's octets, and its `NasSecurityContext` implements the
//! security header, EIA2 (AES-CMAC), EEA2 (AES-CTR) and NAS COUNT rules of TS 24.301
//! §4.4.3). This crate adds:
//! - [`msg`]: typed builders for every message of attach/authentication/security
//!   mode/detach (both ways), service request, tracking area update, identification
//!   and GUTI reallocation, and [`msg::parse`] turning a decoded message into
//!   [`msg::Nas`], a plain enum the state machines can `match` on without knowing
//!   oxirush's IE types;
//! - [`ue::UeNas`]: the UE side (USIM via `aka`, attach/detach) for the RAN emulator;
//! - [`security::NasSecurity`]: a NAS security context whose KNASint/KNASenc come from
//!   crate `aka` (one key-derivation implementation for HSS, MME and UE) that also
//!   builds and verifies the short SERVICE REQUEST, plus
//!   [`security::open`] which handles plain, protected and not-yet-secured messages.
//!
//! Every decoder returns `Result`; nothing here panics on input.

pub mod msg;
pub mod security;
pub mod ue;

#[cfg(test)]
mod tshark_tests;

pub use msg::{Guti, Nas, PdnConnectivity, Tai, UpdateType};
pub use oxirush_nas::nas_eps as eps;
pub use security::{Direction, NasSecurity, Opened, SecurityHeader};
pub use ue::{UeEvent, UeNas, Usim};

/// Errors of this crate: what was wrong with which message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NasError {
    #[error("NAS decode: {0}")]
    Decode(String),
    #[error("NAS encode: {0}")]
    Encode(String),
    #[error("NAS security: {0}")]
    Security(String),
    #[error("NAS integrity check failed")]
    IntegrityFailed,
    #[error("bad value: {0}")]
    Value(String),
}

pub type Result<T> = std::result::Result<T, NasError>;

/// EMM causes used by the MME (TS 24.301 §9.9.3.9).
pub mod cause {
    /// #3 Illegal UE: authentication failed (RES mismatch handled by AUTHENTICATION
    /// REJECT instead), or the UE is barred.
    pub const ILLEGAL_UE: u8 = 3;
    /// #8 EPS services and non-EPS services not allowed: what TS 29.272 Annex A
    /// (Table A.1) maps DIAMETER_ERROR_USER_UNKNOWN (5001) in an AIA/ULA to for an
    /// attach. The MME uses it for an IMSI the HSS does not know.
    pub const EPS_AND_NON_EPS_NOT_ALLOWED: u8 = 8;
    /// #9 UE identity cannot be derived by the network: an ATTACH REQUEST with a GUTI
    /// this MME did not allocate (the UE then attaches again with its IMSI).
    pub const UE_IDENTITY_CANNOT_BE_DERIVED: u8 = 9;
    /// #15 No suitable cells in tracking area (DIAMETER_ERROR_RAT_NOT_ALLOWED etc.).
    pub const NO_SUITABLE_CELLS: u8 = 15;
    /// #17 Network failure: HSS or gateway errors other than "user unknown".
    pub const NETWORK_FAILURE: u8 = 17;
    /// #20 MAC failure (UE: AUTN MAC wrong).
    pub const MAC_FAILURE: u8 = 20;
    /// #21 Synch failure (UE: SQN out of range; AUTS attached).
    pub const SYNCH_FAILURE: u8 = 21;
    /// #26 Non-EPS authentication unacceptable (AMF separation bit not set).
    pub const NON_EPS_AUTH_UNACCEPTABLE: u8 = 26;
    /// #95 Semantically incorrect message.
    pub const SEMANTICALLY_INCORRECT: u8 = 95;
    /// #111 Protocol error, unspecified.
    pub const PROTOCOL_ERROR: u8 = 111;
}

/// The 3-octet PLMN identity (TS 24.008 §10.5.1.13) of `mcc`/`mnc`, via crate `aka`.
pub fn plmn(mcc: &str, mnc: &str) -> Result<[u8; 3]> {
    aka::plmn_id(mcc, mnc).map_err(|e| NasError::Value(e.to_string()))
}
