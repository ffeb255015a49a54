//! A script that misbehaves on demand. The dialled number (for routing) or the user id
//! (for flip policy) picks the misbehaviour; anything else behaves like `listen`. With
//! the location var `tag_at_end` set, it names a tag the call's `call-ended` sets to the
//! call's duration (the script's last word on the record).

use wasmpbx_guest::{
    Action, Call, CallEnded, Decision, FlipPolicy, FlipRequest, Gather, Router, Say, host,
};

struct Misbehave;

/// Events this instance has handled: always 1 when every event gets a fresh instance.
static EVENTS_SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Router for Misbehave {
    fn incoming(call: &Call) -> Vec<Action> {
        misbehave(&call.dialed);
        match call.dialed.as_str() {
            "bad-forward" => vec![Action::forward_to_number("", 30_000)],
            "gather-zero" => vec![Action::Gather(Gather {
                max_digits: 0,
                timeout_ms: 5000,
                inter_digit_timeout_ms: None,
                terminator: None,
                prompt: None,
                say: None,
            })],
            "bad-voice" => vec![Action::Say(Say {
                text: "hello".into(),
                voice: Some("--path=/etc".into()),
            })],
            "bad-stream" => vec![Action::stream_to("http://engine.example/"), Action::Hangup],
            "after-terminal" => vec![Action::Hangup, Action::Answer],
            "missing-prompt" => vec![Action::play("no-such-prompt"), Action::Hangup],
            "nothing" => vec![],
            "aliased" => {
                // 64 tags whose values all point at one 1 MiB string: 1 MiB of the
                // script's memory, 64 MiB for a host that copies every value out.
                let value = std::mem::ManuallyDrop::new("v".repeat(1 << 20));
                (0..64)
                    .map(|_| {
                        // SAFETY: deliberately unsound, confined to this instance (one
                        // event): a host that copied the result out would then have the
                        // guest free this buffer 64 times; wasmpbx refuses it first.
                        let alias = unsafe {
                            String::from_raw_parts(
                                value.as_ptr().cast_mut(),
                                value.len(),
                                value.capacity(),
                            )
                        };
                        Action::tag("t", alias)
                    })
                    .collect()
            }
            // A global the last event would have left behind, were instances reused.
            "global" => {
                let seen = EVENTS_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                vec![Action::tag("events-seen", seen.to_string()), Action::Hangup]
            }
            "kv-write" => {
                let count = host::kv::get("count")
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(0)
                    + 1;
                host::kv::set("count", &count.to_string()).expect("kv.set");
                vec![Action::tag("count", count.to_string()), Action::Hangup]
            }
            _ => vec![Action::forward_to_number(
                host::var("return_number").unwrap_or_else(|| "100".into()),
                30_000,
            )],
        }
    }

    fn call_ended(_call: &Call, ended: &CallEnded) -> Vec<Action> {
        match host::var("tag_at_end") {
            Some(name) => vec![Action::tag(name, ended.duration_ms.to_string())],
            None => Vec::new(),
        }
    }
}

impl FlipPolicy for Misbehave {
    fn decide(request: &FlipRequest) -> Decision {
        misbehave(&request.user_id);
        Decision::allow(Vec::new())
    }
}

/// Trap, loop, exhaust memory, overflow the stack or take its time when told to.
fn misbehave(what: &str) {
    match what {
        "trap" => {
            host::warn("about to trap");
            panic!("told to trap")
        }
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "alloc" => {
            // Reserve without touching: the cap, not the time spent writing, must stop it.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = Vec::<u8>::with_capacity(4 << 20);
                block.push(1);
                hoard.push(std::hint::black_box(block));
            }
        }
        "slow" => {
            // Long enough for a second request to arrive meanwhile (a race test, which
            // raises the deadline for it).
            let start = host::now();
            let since = |now: wasmpbx_guest::Instant| {
                (now.seconds - start.seconds) * 1000
                    + (i64::from(now.nanoseconds) - i64::from(start.nanoseconds)) / 1_000_000
            };
            while since(host::now()) < 100 {}
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(5)),
        "ask-many" => {
            // A thousand names and keys, one of them a megabyte long.
            let long = "n".repeat(1 << 20);
            let _ = host::var(&long);
            let _ = host::kv::get(&long);
            for n in 0..1000 {
                let _ = host::var(&format!("v{n}"));
                let _ = host::kv::get(&format!("k{n}"));
            }
        }
        "recurse" => {
            fn deep(n: u64) -> u64 {
                std::hint::black_box(deep(n + 1)) + 1
            }
            std::hint::black_box(deep(0));
        }
        _ => {}
    }
}

wasmpbx_guest::export_router!(Misbehave);
wasmpbx_guest::export_flip_policy!(Misbehave);
