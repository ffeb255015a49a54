//! A location's `stream_url`: every call to it streams its audio from the start.

use super::testing::Did;
use super::world::{CONFIG, World};
use crate::media::{EngineAudio, StreamRequest, Tracks};
use crate::routing::{Action, MediaStream};

/// The streams the media side was asked to start since last asked.
fn streams_started(w: &mut World) -> Vec<StreamRequest> {
    w.media
        .take()
        .into_iter()
        .filter_map(|did| match did {
            Did::Stream(request) => Some(request),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_to_a_location_with_a_stream_url_streams_both_tracks_from_the_start() {
    let config = CONFIG.replace(
        "fallback_number = \"999\"",
        "fallback_number = \"999\"\nstream_url = \"wss://engine.test/stream?token=t\"",
    );
    let mut w = World::with_config(&config);
    w.far_end_calls("0400", "100", "streamed");
    let id = w.session();
    let streams = streams_started(&mut w);
    assert_eq!(
        streams,
        [StreamRequest {
            url: "wss://engine.test/stream?token=t".into(),
            tracks: Tracks::Both,
            engine_audio: EngineAudio::Ignore,
            call_sid: id.to_string(),
            parameters: vec![
                ("location".into(), "sydney".into()),
                ("caller".into(), "0400".into()),
                ("dialed".into(), "100".into()),
            ],
        }]
    );
}

#[test]
fn a_location_without_a_stream_url_streams_nothing() {
    let mut w = World::new();
    w.far_end_calls("0400", "100", "quiet");
    assert!(
        !w.media.take().iter().any(|d| matches!(d, Did::Stream(_))),
        "no stream"
    );
}

#[test]
fn a_scripts_streams_carry_its_tracks_and_parameters_up_to_four_a_call() {
    let config = CONFIG.replace(
        "fallback_number = \"999\"",
        "fallback_number = \"999\"\nstream_url = \"ws://engine.test/all\"",
    );
    let mut w = World::with_config(&config);
    w.far_end_calls("0400", "100", "scripted");
    let id = w.session();
    w.media.take();
    let stream = |n: usize| {
        Action::MediaStream(MediaStream {
            url: format!("ws://engine.test/{n}"),
            tracks: Tracks::Inbound,
            parameters: vec![("lang".into(), "en".into())],
            engine_audio: EngineAudio::Replace,
        })
    };
    let mut actions: Vec<Action> = (1..=4).map(stream).collect();
    actions.push(Action::Hangup);
    w.route(id, actions);
    let streams = streams_started(&mut w);
    // The location's stream and three of the script's: four in all.
    assert_eq!(streams.len(), 3, "{streams:?}");
    assert_eq!(streams[0].url, "ws://engine.test/1");
    assert_eq!(streams[0].tracks, Tracks::Inbound);
    assert_eq!(streams[0].engine_audio, EngineAudio::Replace);
    assert_eq!(
        streams[0].parameters.last(),
        Some(&("lang".to_string(), "en".to_string())),
        "the script's parameters follow the host's"
    );
    assert_eq!(streams[0].parameters[0].0, "location");
}
