//! Streams the caller's audio to the location var `engine_url` (if set, with a custom
//! parameter; bidirectional when the var `engine_audio` is `mix` or `replace`), answers,
//! says the var `greeting` in the var `voice` (if set), then gathers one key while
//! saying the var `question` (if set) and says what was pressed. With a bidirectional
//! stream and no question it waits 5 s for a key instead: time for the engine to talk.

use wasmpbx_guest::{
    Action, Call, EngineAudio, Gather, Gathered, MediaStream, Router, Say, StreamTracks, host,
};

struct Speaker;

impl Router for Speaker {
    fn incoming(_call: &Call) -> Vec<Action> {
        let mut actions = Vec::new();
        let engine_audio = match host::var("engine_audio").as_deref() {
            Some("mix") => EngineAudio::Mix,
            Some("replace") => EngineAudio::Replace,
            _ => EngineAudio::Ignore,
        };
        if let Some(url) = host::var("engine_url") {
            actions.push(Action::MediaStream(MediaStream {
                url,
                tracks: StreamTracks::Inbound,
                parameters: vec![("purpose".into(), "say-test".into())],
                engine_audio,
            }));
        }
        actions.push(Action::Answer);
        actions.push(Action::Say(Say {
            text: host::var("greeting").unwrap_or_else(|| "Hello.".into()),
            voice: host::var("voice"),
        }));
        match host::var("question") {
            Some(question) => actions.push(Action::Gather(Gather {
                max_digits: 1,
                timeout_ms: 3000,
                inter_digit_timeout_ms: None,
                terminator: None,
                prompt: None,
                say: Some(Say {
                    text: question,
                    voice: None,
                }),
            })),
            None if engine_audio != EngineAudio::Ignore => {
                actions.push(Action::gather(1, 5000, None));
            }
            None => actions.push(Action::Hangup),
        }
        actions
    }

    fn digits_gathered(_call: &Call, gathered: &Gathered) -> Vec<Action> {
        vec![
            Action::tag("pressed", gathered.digits.clone()),
            Action::say(format!("You pressed {}.", gathered.digits)),
            Action::Hangup,
        ]
    }
}

wasmpbx_guest::export_router!(Speaker);
