//! SDES-SRTP per leg: whether the host encrypts a leg's media, decided from the leg's
//! policy (a user's `srtp` or `[media] srtp` for phones, a trunk's `srtp` for its
//! carrier) and the party's SDP. Each leg's keys are its own (the relay decrypts and
//! re-encrypts between legs); a leg's key goes in the host's SDP through its dialog's
//! [`sdp::Origin`], and into the relay through [`MediaAllocator::secure_leg`].

use crate::config::{Config, SrtpPolicy};
use crate::media::{MediaAllocator, Side};
use crate::sdp::{self, Crypto, Media, Security, SrtpSuite};
use wasmpbx_types::ids::SessionId;
use wasmpbx_types::trunk::Trunk;

/// The suite and tag the host offers (the one every SRTP phone and carrier speaks).
const OFFERED_SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;
const OFFERED_TAG: u32 = 1;

/// The policy of a leg to or from one of `user_id`'s phones: the user's own, else the
/// phones' (`[media] srtp`).
pub(crate) fn device_policy(config: &Config, user_id: &str) -> SrtpPolicy {
    config
        .user(user_id)
        .and_then(|u| u.srtp)
        .unwrap_or(config.media.srtp)
}

/// The policy of a trunk's leg: its own, else the phones'.
pub(crate) fn trunk_policy(config: &Config, trunk: Option<&Trunk>) -> SrtpPolicy {
    trunk.and_then(|t| t.srtp).unwrap_or(config.media.srtp)
}

/// Whether the host offers SRTP on a leg it places: only when the leg requires it (an
/// `RTP/SAVP` offer is refused by a phone without SRTP, and a best-effort `RTP/AVP` offer
/// with keys by one that insists on SRTP — neither guess is safe to make for a leg).
pub(crate) fn offers_srtp(policy: SrtpPolicy) -> bool {
    policy == SrtpPolicy::Required
}

/// What the host makes of a party's offer on a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Plain RTP on this leg.
    Plain,
    /// SRTP with the party's first usable key; the answer keeps the offer's profile.
    Secure { remote: Crypto, savp: bool },
}

/// The host's answer to `media`, offered on a leg with `policy`; the reason to refuse it
/// (488) if there is none.
pub(crate) fn answer(policy: SrtpPolicy, media: &Media) -> Result<Offered, &'static str> {
    match (media.crypto.first(), policy) {
        (Some(_), SrtpPolicy::Off) | (None, _) if media.savp => Err(if policy == SrtpPolicy::Off {
            "SRTP offered, and srtp is off"
        } else {
            "RTP/SAVP offered with no key in a suite the host speaks"
        }),
        (None, SrtpPolicy::Required) => Err("plain RTP offered, and srtp is required"),
        (Some(remote), SrtpPolicy::Optional | SrtpPolicy::Required) => Ok(Offered::Secure {
            remote: remote.clone(),
            savp: media.savp,
        }),
        _ => Ok(Offered::Plain),
    }
}

/// Put the host's side of an answer in place: the relay decrypts what the party sends
/// with its key and encrypts with the host's, which the dialog's SDP carries from now on.
pub(crate) fn accept(
    media: &mut dyn MediaAllocator,
    session: SessionId,
    side: Option<Side>,
    origin: &mut sdp::Origin,
    offered: Offered,
) -> Result<(), String> {
    let Offered::Secure { remote, savp } = offered else {
        media.plain_leg(session, side);
        origin.secure(None);
        return Ok(());
    };
    let key = media.secure_leg(session, side, remote.suite, Some(&remote.key))?;
    origin.secure(Some(Security {
        crypto: Crypto {
            tag: remote.tag,
            suite: remote.suite,
            key,
        },
        savp,
    }));
    Ok(())
}

/// Prepare the host's offer on a leg: with `secure`, the relay encrypts what it sends
/// there with a key of the host's, which the dialog's SDP offers as `RTP/SAVP`.
pub(crate) fn offer(
    media: &mut dyn MediaAllocator,
    session: SessionId,
    side: Option<Side>,
    origin: &mut sdp::Origin,
    secure: bool,
) -> Result<(), String> {
    if !secure {
        // The leg may have been offered SRTP before (a fork to a phone that requires it,
        // then a trunk without): nothing of that may stay.
        media.plain_leg(session, side);
        origin.secure(None);
        return Ok(());
    }
    let key = media.secure_leg(session, side, OFFERED_SUITE, None)?;
    origin.secure(Some(Security {
        crypto: Crypto {
            tag: OFFERED_TAG,
            suite: OFFERED_SUITE,
            key,
        },
        savp: true,
    }));
    Ok(())
}

/// The party answered the host's offer with `media`: on an SRTP offer its key (for the
/// tag offered) goes to the relay. The reason if the answer cannot be used.
pub(crate) fn answered(
    media_allocator: &mut dyn MediaAllocator,
    session: SessionId,
    side: Option<Side>,
    origin: &sdp::Origin,
    media: &Media,
) -> Result<(), String> {
    let Some(ours) = origin.security() else {
        return Ok(());
    };
    let theirs = media
        .crypto
        .iter()
        .find(|c| c.tag == ours.crypto.tag && c.suite == ours.crypto.suite)
        .ok_or("the answer to an SRTP offer has no key for it")?;
    media_allocator
        .secure_leg(session, side, theirs.suite, Some(&theirs.key))
        .map(|_| ())
}

/// A party offers again in its dialog (a re-INVITE): on an SRTP leg its key (and tag)
/// may change and the relay follows; a plain leg stays plain. The reason to refuse the
/// offer (488): SRTP dropped, or SRTP asked for on a plain leg.
pub(crate) fn reoffered(
    media_allocator: &mut dyn MediaAllocator,
    session: SessionId,
    side: Side,
    origin: &mut sdp::Origin,
    media: &Media,
) -> Result<(), String> {
    match (origin.security().is_some(), media.crypto.first()) {
        (true, Some(remote)) => {
            let offered = Offered::Secure {
                remote: remote.clone(),
                savp: media.savp,
            };
            accept(media_allocator, session, Some(side), origin, offered)
        }
        (true, None) => Err("plain RTP offered on an SRTP leg".into()),
        (false, _) if media.savp => Err("SRTP offered on a plain leg".into()),
        (false, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::SdesKey;

    fn media(savp: bool, keys: usize) -> Media {
        Media {
            rtp: None,
            payload_types: vec![0],
            savp,
            crypto: (0..keys as u32)
                .map(|tag| Crypto {
                    tag: tag + 1,
                    suite: SrtpSuite::AesCm128HmacSha1_80,
                    key: SdesKey([tag as u8; 30]),
                })
                .collect(),
        }
    }

    #[test]
    fn each_policy_answers_what_it_may_and_refuses_the_rest() {
        use SrtpPolicy::*;
        let secure = |savp| {
            Ok(Offered::Secure {
                remote: media(savp, 2).crypto[0].clone(),
                savp,
            })
        };
        // Plain RTP: fine unless required.
        assert_eq!(answer(Off, &media(false, 0)), Ok(Offered::Plain));
        assert_eq!(answer(Optional, &media(false, 0)), Ok(Offered::Plain));
        assert!(answer(Required, &media(false, 0)).is_err());
        // RTP/SAVP with keys: SRTP unless off.
        assert!(answer(Off, &media(true, 2)).is_err());
        assert_eq!(answer(Optional, &media(true, 2)), secure(true));
        assert_eq!(answer(Required, &media(true, 2)), secure(true));
        // RTP/SAVP without a usable key: nothing to answer with.
        for policy in [Off, Optional, Required] {
            assert!(answer(policy, &media(true, 0)).is_err());
        }
        // Keys in an RTP/AVP offer ("SRTP if you can"): taken unless off.
        assert_eq!(answer(Off, &media(false, 1)), Ok(Offered::Plain));
        assert_eq!(answer(Optional, &media(false, 1)), secure(false));
    }

    #[test]
    fn the_host_offers_srtp_only_where_it_is_required() {
        assert!(offers_srtp(SrtpPolicy::Required));
        assert!(!offers_srtp(SrtpPolicy::Optional) && !offers_srtp(SrtpPolicy::Off));
    }
}
