//! The one action interpreter: how a script's action list runs, the same for a live call
//! (`wasmpbx-core`) and for `script simulate` (`wasmpbx-script`). Each carries the
//! actions out its own way through [`ActionHost`]; the order, what suspends or ends the
//! list, and what happens when an action cannot be carried out are decided here, once.
//!
//! - Actions run in order. `set-tag`, `answer` and `recording` run and the list goes on.
//! - `play` and `say` suspend the list: the rest runs when the prompt has played.
//! - `media-stream` starts a stream and the list goes on.
//! - `gather` suspends it too: its outcome is the script's next event.
//! - `forward`, `reject` and `hangup` end it.
//! - An action the host cannot carry out (an unknown prompt, say) hands the call to
//!   [`ActionHost::failed`] — the location's fallback on a live call.
//! - A list that ends without suspending or ending leaves nothing to wait for:
//!   [`ActionHost::nothing_to_wait_for`] ends the call.

use crate::routing::{Action, ForwardTarget, Speech};

/// A `forward` action's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub target: ForwardTarget,
    pub trunk: Option<String>,
    pub ring_timeout_ms: u32,
    pub caller_id: Option<String>,
}

/// A `gather` action's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gather {
    pub max_digits: u8,
    /// For the first digit, from the end of the prompt.
    pub timeout_ms: u32,
    /// For each further digit.
    pub inter_digit_timeout_ms: u32,
    pub terminator: Option<char>,
    pub prompt: Option<String>,
    /// Spoken instead of a prompt.
    pub say: Option<Speech>,
}

pub use crate::routing::MediaStream;

/// What carries actions out: a live call, or a simulated one.
pub trait ActionHost {
    /// Called before each action runs (a simulation writes it down).
    fn will_run(&mut self, _action: &Action) {}
    /// Whether the call is over (an earlier action ended it): the rest is moot.
    fn is_over(&self) -> bool;
    fn set_tag(&mut self, name: &str, value: &str);
    fn answer(&mut self) -> Result<(), String>;
    fn recording(&mut self, on: bool) -> Result<(), String>;
    /// Play `prompt`; `rest` runs (through [`run`]) once it has played.
    fn play(&mut self, prompt: &str, rest: Vec<Action>) -> Result<(), String>;
    /// Speak `speech`; `rest` runs (through [`run`]) once it has been said.
    fn say(&mut self, speech: Speech, rest: Vec<Action>) -> Result<(), String>;
    fn media_stream(&mut self, stream: MediaStream) -> Result<(), String>;
    /// Collect digits; the outcome is the script's next event.
    fn gather(&mut self, gather: Gather) -> Result<(), String>;
    fn forward(&mut self, forward: Forward);
    fn reject(&mut self, status: u16, reason: Option<String>);
    fn hangup(&mut self);
    /// The list ended and nothing is under way: the call ends.
    fn nothing_to_wait_for(&mut self);
    /// An action could not be carried out (`why`): the call goes to its fallback.
    fn failed(&mut self, why: String);
}

/// Run `actions` on `host`.
pub fn run(host: &mut impl ActionHost, actions: Vec<Action>) {
    let mut actions = actions.into_iter();
    while let Some(action) = actions.next() {
        if host.is_over() {
            return;
        }
        host.will_run(&action);
        let outcome = match action {
            Action::SetTag { name, value } => {
                host.set_tag(&name, &value);
                Ok(())
            }
            Action::Answer => host.answer(),
            Action::Recording { on } => host.recording(on),
            Action::Play { prompt } => {
                return host
                    .play(&prompt, actions.collect())
                    .unwrap_or_else(|why| host.failed(why));
            }
            Action::Say(speech) => {
                return host
                    .say(speech, actions.collect())
                    .unwrap_or_else(|why| host.failed(why));
            }
            Action::MediaStream(stream) => host.media_stream(stream),
            Action::Gather {
                max_digits,
                timeout_ms,
                inter_digit_timeout_ms,
                terminator,
                prompt,
                say,
            } => {
                let gather = Gather {
                    max_digits,
                    timeout_ms,
                    inter_digit_timeout_ms,
                    terminator,
                    prompt,
                    say,
                };
                return host.gather(gather).unwrap_or_else(|why| host.failed(why));
            }
            Action::Forward {
                target,
                trunk,
                ring_timeout_ms,
                caller_id,
            } => {
                return host.forward(Forward {
                    target,
                    trunk,
                    ring_timeout_ms,
                    caller_id,
                });
            }
            Action::Reject { status, reason } => return host.reject(status, reason),
            Action::Hangup => return host.hangup(),
        };
        if let Err(why) = outcome {
            return host.failed(why);
        }
    }
    if !host.is_over() {
        host.nothing_to_wait_for();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EngineAudio, Tracks};

    /// Writes down what it was asked; `answer` fails when told to.
    #[derive(Default)]
    struct Log {
        did: Vec<String>,
        answer_fails: bool,
        over: bool,
    }

    impl ActionHost for Log {
        fn is_over(&self) -> bool {
            self.over
        }
        fn set_tag(&mut self, name: &str, value: &str) {
            self.did.push(format!("tag {name}={value}"));
        }
        fn answer(&mut self) -> Result<(), String> {
            self.did.push("answer".into());
            match self.answer_fails {
                true => Err("no codec".into()),
                false => Ok(()),
            }
        }
        fn recording(&mut self, on: bool) -> Result<(), String> {
            self.did.push(format!("recording {on}"));
            Ok(())
        }
        fn play(&mut self, prompt: &str, rest: Vec<Action>) -> Result<(), String> {
            self.did
                .push(format!("play {prompt}, then {} more", rest.len()));
            Ok(())
        }
        fn say(&mut self, speech: Speech, rest: Vec<Action>) -> Result<(), String> {
            self.did
                .push(format!("say {:?}, then {} more", speech.text, rest.len()));
            Ok(())
        }
        fn media_stream(&mut self, stream: MediaStream) -> Result<(), String> {
            self.did.push(format!("stream to {}", stream.url));
            Ok(())
        }
        fn gather(&mut self, gather: Gather) -> Result<(), String> {
            self.did.push(format!("gather {}", gather.max_digits));
            Ok(())
        }
        fn forward(&mut self, forward: Forward) {
            self.did.push(format!("forward {:?}", forward.target));
            self.over = true;
        }
        fn reject(&mut self, status: u16, _: Option<String>) {
            self.did.push(format!("reject {status}"));
            self.over = true;
        }
        fn hangup(&mut self) {
            self.did.push("hangup".into());
            self.over = true;
        }
        fn nothing_to_wait_for(&mut self) {
            self.did.push("ends: nothing to wait for".into());
        }
        fn failed(&mut self, why: String) {
            self.did.push(format!("fallback: {why}"));
        }
    }

    fn tag() -> Action {
        Action::SetTag {
            name: "k".into(),
            value: "v".into(),
        }
    }

    #[test]
    fn play_suspends_with_the_rest_and_forward_ends() {
        let mut log = Log::default();
        let play = Action::Play {
            prompt: "welcome".into(),
        };
        run(
            &mut log,
            vec![tag(), Action::Answer, play, tag(), Action::Hangup],
        );
        assert_eq!(log.did, ["tag k=v", "answer", "play welcome, then 2 more"]);
        let mut log = Log::default();
        let forward = Action::Forward {
            target: ForwardTarget::Fallback,
            trunk: None,
            ring_timeout_ms: 1,
            caller_id: None,
        };
        run(&mut log, vec![Action::Recording { on: true }, forward]);
        assert_eq!(log.did, ["recording true", "forward Fallback"]);
    }

    #[test]
    fn say_suspends_like_play_and_a_stream_goes_on() {
        let mut log = Log::default();
        let stream = Action::MediaStream(MediaStream {
            url: "wss://engine.example/s".into(),
            tracks: Tracks::Both,
            parameters: Vec::new(),
            engine_audio: EngineAudio::Ignore,
        });
        let say = Action::Say(Speech::new("Hello", None));
        run(&mut log, vec![stream, say, tag(), Action::Hangup]);
        assert_eq!(
            log.did,
            [
                "stream to wss://engine.example/s",
                "say \"Hello\", then 2 more"
            ]
        );
    }

    #[test]
    fn a_failed_action_falls_back_and_a_list_without_an_end_ends_the_call() {
        let mut log = Log {
            answer_fails: true,
            ..Log::default()
        };
        run(&mut log, vec![Action::Answer, tag()]);
        assert_eq!(log.did, ["answer", "fallback: no codec"]);
        let mut log = Log::default();
        run(&mut log, vec![tag()]);
        assert_eq!(log.did, ["tag k=v", "ends: nothing to wait for"]);
    }
}
