//! Randomness from the operating system, for the edges: the driver's seed for each
//! input of the core, the media's SSRCs, sequence numbers and port choices. The sans-IO
//! core never calls it; it draws from the seed its driver hands it ([`wasmpbx_types::entropy`]).

/// 64 random bits. Without OS randomness the result is still usable (zero bits), only
/// guessable, which is no reason to drop a call.
#[allow(clippy::disallowed_methods)] // the one place the media reads OS randomness
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// `bytes` filled for a secret (an SRTP key). Unlike [`random_u64`] it fails without OS
/// randomness: a guessable key is worse than no encrypted call.
#[allow(clippy::disallowed_methods)] // the one place the media reads OS randomness
pub fn secret(bytes: &mut [u8]) -> Result<(), String> {
    getrandom::fill(bytes).map_err(|e| format!("no randomness for a secret: {e}"))
}
