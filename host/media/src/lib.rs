//! # wasmpbx-media — what the host does with RTP
//!
//! The media edge: it implements the call engine's seam
//! ([`MediaAllocator`], re-exported here with the
//! rest of `wasmpbx_types::media`) with sockets and tasks.
//!
//! Every call is anchored: the host owns an RTP/RTCP port pair per leg ([`relay`]). On a
//! leg the host has not answered itself the packets pass through untouched (listen mode).
//! Once the host answers the caller (active mode) it is that leg's media endpoint: it
//! sends the caller its own stream ([`rtp::OutStream`]) — prompts, ringback, and later the
//! other leg's packets renumbered into it — and hears the caller's DTMF as it happens.
//! Recording taps both directions into a stereo WAV ([`recorder`]). What happens to each
//! packet is decided by a call's `packets` state, free of sockets and unit-tested;
//! `ports` hands out the RTP/RTCP port pairs; `relay` owns the calls' sockets and
//! tasks. A browser's leg is bridged from WebRTC to plain RTP ([`webrtc`]). Text for
//! `say` becomes speech in [`speech`] (espeak-ng, cached).

pub mod os_random;
mod packets;
mod playout;
mod ports;
pub mod recorder;
pub mod relay;
pub mod rtp;
pub mod speech;
mod srtp;
mod stream;
pub mod webrtc;

pub use recorder::RecordingFiles;
pub use relay::{RelayCounters, RelayManager};
pub use wasmpbx_types::media::*;

use wasmpbx_types::{clock, config};
