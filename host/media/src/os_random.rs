//! Randomness from the operating system, for the edges: the driver's seed for each
//! input of the core, the media's SSRCs, sequence numbers and port choices. The sans-IO
//! core never calls it; it draws from the seed its driver hands it ([`wasmpbx_types::entropy`]).

/// 64 random bits, from the thread's cryptographically secure generator, which the
/// operating system seeds (and reseeds): asked for with every input of the core, so not
/// a system call each.
#[allow(clippy::disallowed_methods)] // the one place the media draws randomness
pub fn random_u64() -> u64 {
    rand::random()
}

/// `bytes` filled for a secret (an SRTP key). Unlike [`random_u64`] it fails without OS
/// randomness: a guessable key is worse than no encrypted call.
#[allow(clippy::disallowed_methods)] // the one place the media reads OS randomness
pub fn secret(bytes: &mut [u8]) -> Result<(), String> {
    getrandom::fill(bytes).map_err(|e| format!("no randomness for a secret: {e}"))
}
