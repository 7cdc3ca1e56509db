//! What to do next in a transfer: the order of the methods, what each way a method can
//! fail means, and when a failed attempt is retried. Pure (no I/O, no clock): the engine
//! reports each method's [`Outcome`] and carries out the [`Step`] it gets back.
//!
//! - The methods of an attempt ([`methods`]): between plain servers standard FXP, reverse
//!   FXP, relay. When a server speaks TLS: FXP with `SSCN` (standard, then reverse), FXP
//!   with `CPSV` (the same), FXP with `PROT C` only if clear data is allowed, then the
//!   relay (TLS on each of its legs whose server speaks TLS). `reverse` keeps only the
//!   reverse direct methods, no `relay_fallback` drops the relay. A server behind an
//!   agent is never the passive one ([`Passive`]): the direct methods that would make it
//!   so are left out.
//! - A method these servers cannot do ([`Outcome::Unsupported`]: neither offers `SSCN`,
//!   say) is passed over quietly, on the same sessions; its reason is told only if no
//!   method could be tried at all.
//! - Refused while negotiating ([`Fail::Negotiation`]): the next method, on the same
//!   sessions.
//! - Failed once data should flow ([`Fail::Transfer`]): the sessions are given up
//!   (`ABOR`, `QUIT`) and the next method starts on fresh ones (the engine resumes with
//!   `REST` where it can). A copy whose size comes out wrong: the same, with a plain `QUIT`.
//! - Lost ([`Fail::Lost`]: the source finished, the destination stopped taking the file
//!   and never answered; or a command went unanswered while negotiating): a server's
//!   fault, not the method's.
//!   The sessions are given up and the same method runs again on fresh ones, up to
//!   [`LOST_AGAIN`] times per attempt; one more loss counts as a [`Fail::Transfer`].
//! - Refused about the file itself ([`Fail::Fatal`]) or unable to start (a login, the
//!   source's `SIZE`): no other method would do better, the attempt ends.
//! - An attempt that ends in failure is retried after a backoff, up to `retries` times,
//!   unless the failure is permanent (a `5xx`): then the transfer gives up at once.

use std::time::Duration;

use crate::fxp::error::FxpError;
use crate::fxp::method::{Method, Passive};

/// How often one attempt runs the same method again after a server lost the file
/// ([`Fail::Lost`]) before moving on to the next method, each time twice as patient (see
/// `direct`). pyftpdlib 1.5 loses about one transfer in thirty when four run on it at
/// once, and a lost file's next try is lost more often than that (measured: about one
/// in seven): at 2 a file went to reverse FXP now and then on a 200-file tree.
pub(super) const LOST_AGAIN: u32 = 4;

/// Longest wait between two attempts, however many retries were asked for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the caller asked for (the fields of the engine's `Options` of the same names).
#[derive(Debug, Clone, Copy)]
pub(super) struct Choices {
    /// Start with reverse FXP (skip standard FXP).
    pub(super) reverse: bool,
    /// Relay the bytes when neither FXP direction works.
    pub(super) relay_fallback: bool,
    /// Further attempts after a failed one.
    pub(super) retries: u32,
    /// A server speaks TLS (`ftpes://`, `ftps://`): the secure methods apply.
    pub(super) secure: bool,
    /// `fxp.allow_clear_data`: FXP with `PROT C` may be tried between TLS servers.
    pub(super) clear_data: bool,
    /// Which server may be passive (the agents the URLs name).
    pub(super) passive: Passive,
}

/// The methods one attempt tries, in order. Never empty unless the servers are behind
/// agents that leave no direct method and the relay is off (the engine refuses that
/// before it starts).
pub(super) fn methods(choices: Choices) -> Vec<Method> {
    use Method::*;
    let mut v = if choices.secure {
        let mut v = vec![FxpSscn, ReverseFxpSscn, FxpCpsv, ReverseFxpCpsv];
        if choices.clear_data {
            v.extend([FxpClear, ReverseFxpClear]);
        }
        v
    } else {
        vec![Fxp, ReverseFxp]
    };
    if choices.reverse {
        v.retain(|m| m.is_reverse());
    }
    v.retain(|m| choices.passive.admits(*m));
    if choices.relay_fallback {
        v.push(Relay);
    }
    v
}

/// How a method failed.
#[derive(Debug)]
pub(super) enum Fail {
    /// Refused while negotiating: the sessions are clean, the next method may use them.
    Negotiation(FxpError),
    /// Failed after `STOR`/`RETR` were sent: give up these sessions.
    Transfer(FxpError),
    /// About the file itself (`550`, `553`, ...): no other method would do better.
    Fatal(FxpError),
    /// The source sent everything, the destination stopped storing and never answered
    /// (or a command went unanswered while negotiating): give up these sessions and try
    /// the same method again on fresh ones.
    Lost(FxpError),
}

impl Fail {
    /// A failure once `STOR`/`RETR` were sent: a refusal about the data connection
    /// (`425`, `426`, and `522`: its TLS failed, e.g. vsftpd's `session reuse required`
    /// when another server is its TLS client under `SSCN`) or no reply code at all (a
    /// timeout, a short file) lets the next method try; any other code is about the file
    /// (`550`, `553`, ...) and does not.
    pub(super) fn started(e: FxpError) -> Fail {
        match e.code() {
            Some(425 | 426 | 522) | None => Fail::Transfer(e),
            Some(_) => Fail::Fatal(e),
        }
    }
}

/// What came of the step the plan asked for.
#[derive(Debug)]
pub(super) enum Outcome<T> {
    /// The method copied the file, and the sizes agree or cannot be compared.
    Copied(T),
    /// The method failed.
    Failed(Fail),
    /// The method finished but the destination's size differs from the source's
    /// ([`FxpError::SizeMismatch`]).
    Mismatch(FxpError),
    /// The attempt could not start: a login, the source's `SIZE`, or the two URLs name
    /// the same file.
    NotStarted(FxpError),
    /// These servers cannot do the method (neither offers `SSCN`, say); nothing was sent.
    Unsupported(FxpError),
}

impl<T> Outcome<T> {
    /// A method's own failure, which the front end hears as `Event::MethodFailed`
    /// (a failure to start is no method's).
    pub(super) fn method_error(&self) -> Option<&FxpError> {
        match self {
            Outcome::Failed(
                Fail::Negotiation(e) | Fail::Transfer(e) | Fail::Fatal(e) | Fail::Lost(e),
            )
            | Outcome::Mismatch(e) => Some(e),
            Outcome::Copied(_) | Outcome::NotStarted(_) | Outcome::Unsupported(_) => None,
        }
    }
}

/// How to end the sessions in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    /// `QUIT`: nothing is in progress.
    Quit,
    /// `ABOR`, then `QUIT`: a transfer failed and may still be winding down; a server
    /// logged into again before that ends may not answer the new login.
    Abort,
    /// A server lost the file ([`Fail::Lost`]): its session, with the reply it never
    /// sent outstanding, gets `ABOR` and `QUIT`; the other, which finished its side and
    /// has nothing outstanding, serves the next try (a fresh login costs more than a
    /// small file: vsftpd's PAM login alone ~50 ms).
    Lost,
}

/// What the engine does next. Every step but [`Step::Try`] first closes the sessions in
/// hand, as [`Step::close`] says.
#[derive(Debug)]
pub(super) enum Step<T> {
    /// Try `method` on the sessions in hand (logging in first when there are none).
    Try(Method),
    /// Close the sessions, then try `method` on fresh ones.
    Reconnect(Method, Close),
    /// Attempt `attempt` failed with `error`: close the sessions, wait `after`, then start
    /// the next attempt with `method` on fresh sessions.
    Retry {
        close: Close,
        attempt: u32,
        after: Duration,
        error: FxpError,
        method: Method,
    },
    /// The transfer failed with this error.
    GiveUp(Close, FxpError),
    /// The transfer succeeded; `QUIT` both sessions.
    Done(T),
}

impl<T> Step<T> {
    /// How the sessions in hand end before this step; `None`: they are kept.
    pub(super) fn close(&self) -> Option<Close> {
        match self {
            Step::Try(_) => None,
            Step::Reconnect(_, close) | Step::Retry { close, .. } | Step::GiveUp(close, _) => {
                Some(*close)
            }
            Step::Done(_) => Some(Close::Quit),
        }
    }
}

/// Where a transfer stands: which attempt, which method, what failed so far.
#[derive(Debug)]
pub(super) struct Attempts {
    choices: Choices,
    /// [`methods`] of the choices.
    order: Vec<Method>,
    /// 1-based.
    attempt: u32,
    /// Index in `order` of the method being tried.
    at: usize,
    /// This attempt's failed methods, in order.
    tried: Vec<(Method, FxpError)>,
    /// This attempt's methods the servers could not do, with why.
    skipped: Vec<(Method, FxpError)>,
    /// How often this attempt ran a method again after a server lost the file.
    lost: u32,
}

impl Attempts {
    pub(super) fn new(choices: Choices) -> Attempts {
        Attempts {
            choices,
            order: methods(choices),
            attempt: 1,
            at: 0,
            tried: vec![],
            skipped: vec![],
            lost: 0,
        }
    }

    /// The method being tried.
    fn method(&self) -> Method {
        self.order.get(self.at).copied().unwrap_or(Method::Relay)
    }

    /// The first step: the first method, on fresh sessions.
    pub(super) fn start<T>(&self) -> Step<T> {
        Step::Try(self.method())
    }

    /// The attempt under way (1-based): when the transfer is done, the attempts it took.
    pub(super) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How often this attempt has run a method again after a server lost the file: the
    /// direct methods give a destination longer to answer each time (see `direct`).
    pub(super) fn losses(&self) -> u32 {
        self.lost
    }

    /// The step after `outcome` of the step last asked for.
    pub(super) fn next<T>(&mut self, outcome: Outcome<T>) -> Step<T> {
        match outcome {
            Outcome::Copied(t) => Step::Done(t),
            Outcome::Failed(Fail::Negotiation(e)) => self.next_method(e, None),
            Outcome::Failed(Fail::Transfer(e)) => self.next_method(e, Some(Close::Abort)),
            Outcome::Failed(Fail::Lost(_)) if self.lost < LOST_AGAIN => {
                self.lost += 1;
                Step::Reconnect(self.method(), Close::Lost)
            }
            Outcome::Failed(Fail::Lost(e)) => self.next_method(e, Some(Close::Lost)),
            // The sessions are idle, but whatever made the copy short may linger in them.
            Outcome::Mismatch(e) => self.next_method(e, Some(Close::Quit)),
            Outcome::Failed(Fail::Fatal(e)) => self.end_attempt(e, Close::Abort),
            Outcome::NotStarted(e) => self.end_attempt(e, Close::Quit),
            Outcome::Unsupported(e) => {
                self.skipped.push((self.method(), e));
                self.advance(None)
            }
        }
    }

    /// The current method failed with `e`; `close`: how its sessions end (`None`: the
    /// next method reuses them).
    fn next_method<T>(&mut self, e: FxpError, close: Option<Close>) -> Step<T> {
        self.tried.push((self.method(), e));
        self.advance(close)
    }

    /// On to the next method of the attempt, or the end of the attempt after the last.
    fn advance<T>(&mut self, close: Option<Close>) -> Step<T> {
        self.at += 1;
        match (self.order.get(self.at).copied(), close) {
            (Some(next), None) => Step::Try(next),
            (Some(next), Some(close)) => Step::Reconnect(next, close),
            (None, close) => {
                // Only when no method could be tried do the reasons they could not count.
                let tried = if self.tried.is_empty() {
                    std::mem::take(&mut self.skipped)
                } else {
                    std::mem::take(&mut self.tried)
                };
                self.end_attempt(FxpError::methods(tried), close.unwrap_or(Close::Quit))
            }
        }
    }

    /// The attempt failed with `e`: retry, unless retrying is no use or none is left.
    fn end_attempt<T>(&mut self, e: FxpError, close: Close) -> Step<T> {
        if e.is_permanent() || self.attempt > self.choices.retries {
            return Step::GiveUp(close, e);
        }
        let failed = self.attempt;
        self.attempt += 1;
        self.at = 0;
        self.tried.clear();
        self.skipped.clear();
        self.lost = 0;
        Step::Retry {
            close,
            attempt: failed,
            after: backoff(failed),
            error: e,
            method: self.method(),
        }
    }
}

/// The wait after failed attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, ... up to
/// [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fxp::client::FtpError;
    use crate::fxp::error::Side;

    const ALL: Choices = Choices {
        reverse: false,
        relay_fallback: true,
        retries: 2,
        secure: false,
        clear_data: false,
        passive: Passive::Either,
    };

    const SECURE: Choices = Choices {
        secure: true,
        ..ALL
    };

    fn refused(code: u16) -> FxpError {
        let error = FtpError::Refused {
            cmd: "RETR f".into(),
            code,
            text: format!("{code} no"),
        };
        FxpError::at(Side::Source, "a", error)
    }

    fn other(text: &str) -> FxpError {
        FxpError::Other(text.into())
    }

    fn negotiation(text: &str) -> Outcome<()> {
        Outcome::Failed(Fail::Negotiation(other(text)))
    }

    fn transfer(text: &str) -> Outcome<()> {
        Outcome::Failed(Fail::Transfer(other(text)))
    }

    /// The methods one attempt tries, each refused while negotiating.
    fn order(choices: Choices) -> Vec<Method> {
        let mut plan = Attempts::new(choices);
        let mut step = plan.start::<()>();
        let mut seen = vec![];
        while let Step::Try(m) = step {
            seen.push(m);
            step = plan.next(negotiation("no"));
        }
        seen
    }

    #[test]
    fn the_methods_come_in_order_and_the_options_drop_some() {
        use Method::*;
        assert_eq!(order(ALL), [Fxp, ReverseFxp, Relay]);
        let reverse = Choices {
            reverse: true,
            ..ALL
        };
        assert_eq!(order(reverse), [ReverseFxp, Relay]);
        let direct = Choices {
            relay_fallback: false,
            ..ALL
        };
        assert_eq!(order(direct), [Fxp, ReverseFxp]);
        let reverse_only = Choices {
            relay_fallback: false,
            ..reverse
        };
        assert_eq!(order(reverse_only), [ReverseFxp]);
    }

    /// A server behind an agent is the active one: standard FXP when it is the
    /// destination, reverse when it is the source, only the relay between two agents.
    #[test]
    fn a_server_behind_an_agent_is_never_passive() {
        use Method::*;
        let with = |passive, c: Choices| order(Choices { passive, ..c });
        assert_eq!(with(Passive::Source, ALL), [Fxp, Relay]);
        assert_eq!(with(Passive::Destination, ALL), [ReverseFxp, Relay]);
        assert_eq!(with(Passive::Neither, ALL), [Relay]);
        assert_eq!(with(Passive::Source, SECURE), [FxpSscn, FxpCpsv, Relay]);
        let no_relay = Choices {
            relay_fallback: false,
            ..ALL
        };
        assert_eq!(with(Passive::Destination, no_relay), [ReverseFxp]);
        let none = Choices {
            passive: Passive::Neither,
            ..no_relay
        };
        assert!(methods(none).is_empty());
    }

    #[test]
    fn tls_servers_try_the_protected_methods_then_the_relay() {
        use Method::*;
        assert_eq!(
            order(SECURE),
            [FxpSscn, ReverseFxpSscn, FxpCpsv, ReverseFxpCpsv, Relay]
        );
        // Clear data between the servers only when the operator allows it, after the
        // protected ways and before the relay.
        let clear = Choices {
            clear_data: true,
            ..SECURE
        };
        assert_eq!(
            order(clear),
            [
                FxpSscn,
                ReverseFxpSscn,
                FxpCpsv,
                ReverseFxpCpsv,
                FxpClear,
                ReverseFxpClear,
                Relay
            ]
        );
        // Never plain FXP between TLS servers, and no clear data for plain ones either.
        assert!(!order(clear).contains(&Fxp) && !order(clear).contains(&ReverseFxp));
        assert_eq!(
            order(Choices {
                clear_data: true,
                ..ALL
            }),
            [Fxp, ReverseFxp, Relay]
        );
        let reverse = Choices {
            reverse: true,
            relay_fallback: false,
            ..clear
        };
        assert_eq!(
            order(reverse),
            [ReverseFxpSscn, ReverseFxpCpsv, ReverseFxpClear]
        );
    }

    #[test]
    fn unsupported_methods_are_passed_over_quietly() {
        let mut plan = Attempts::new(SECURE);
        let unsupported = |why: &str| Outcome::<()>::Unsupported(other(why));
        assert!(unsupported("x").method_error().is_none());
        // Neither offers SSCN, nor CPSV: straight to the relay, on the same sessions.
        for next in [
            Method::ReverseFxpSscn,
            Method::FxpCpsv,
            Method::ReverseFxpCpsv,
            Method::Relay,
        ] {
            let step = plan.next(unsupported("no SSCN or CPSV"));
            assert!(matches!(step, Step::Try(m) if m == next), "{step:?}");
        }
        // A method that was tried explains the failure; the skipped ones do not.
        let step = plan.next(negotiation("relay refused"));
        let Step::Retry { error, .. } = step else {
            panic!("{step:?}")
        };
        assert_eq!(error.to_string(), "relay refused");
    }

    #[test]
    fn when_nothing_could_be_tried_the_reasons_are_told() {
        let mut plan = Attempts::new(Choices {
            relay_fallback: false,
            retries: 0,
            ..SECURE
        });
        for _ in 0..3 {
            assert!(matches!(
                plan.next(Outcome::<()>::Unsupported(other("no SSCN"))),
                Step::Try(_)
            ));
        }
        let step = plan.next(Outcome::<()>::Unsupported(other("no CPSV")));
        let Step::GiveUp(Close::Quit, FxpError::Methods(why)) = step else {
            panic!("{step:?}")
        };
        assert_eq!(why.len(), 4);
        assert_eq!(why[3].0, Method::ReverseFxpCpsv);
    }

    #[test]
    fn a_copy_is_done_and_quits() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next(Outcome::Copied(7));
        assert!(matches!(step, Step::Done(7)), "{step:?}");
        assert_eq!(step.close(), Some(Close::Quit));
        assert_eq!(plan.attempt(), 1);
    }

    #[test]
    fn the_first_step_tries_the_first_method_keeping_nothing() {
        let step = Attempts::new(ALL).start::<()>();
        assert!(matches!(step, Step::Try(Method::Fxp)), "{step:?}");
        assert_eq!(step.close(), None);
    }

    #[test]
    fn a_refused_negotiation_keeps_the_sessions() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next(negotiation("PORT refused"));
        assert!(matches!(step, Step::Try(Method::ReverseFxp)), "{step:?}");
        assert_eq!(step.close(), None);
    }

    #[test]
    fn a_failed_transfer_aborts_and_reconnects() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next(transfer("425"));
        assert!(
            matches!(step, Step::Reconnect(Method::ReverseFxp, Close::Abort)),
            "{step:?}"
        );
        assert_eq!(step.close(), Some(Close::Abort));
    }

    #[test]
    fn a_size_mismatch_quits_and_reconnects() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next::<()>(Outcome::Mismatch(FxpError::SizeMismatch { src: 9, dst: 4 }));
        assert!(
            matches!(step, Step::Reconnect(Method::ReverseFxp, Close::Quit)),
            "{step:?}"
        );
    }

    #[test]
    fn a_refusal_of_the_file_ends_everything_at_once() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next::<()>(Outcome::Failed(Fail::Fatal(refused(550))));
        // The file's own refusal, not a list of methods; no retry although two are left.
        let Step::GiveUp(Close::Abort, e) = step else {
            panic!("{step:?}")
        };
        assert_eq!(e.code(), Some(550));
        assert!(!matches!(e, FxpError::Methods(_)), "{e}");
    }

    #[test]
    fn a_transient_refusal_of_the_file_retries_from_the_first_method() {
        let mut plan = Attempts::new(ALL);
        assert!(matches!(plan.next(negotiation("a")), Step::Try(_)));
        let step = plan.next::<()>(Outcome::Failed(Fail::Fatal(refused(451))));
        let Step::Retry {
            close,
            attempt,
            after,
            error,
            method,
        } = step
        else {
            panic!("{step:?}")
        };
        assert_eq!((close, attempt, method), (Close::Abort, 1, Method::Fxp));
        assert_eq!(after, Duration::from_millis(500));
        assert_eq!(error.code(), Some(451));
        assert_eq!(plan.attempt(), 2);
    }

    #[test]
    fn an_attempt_that_cannot_start_quits_and_retries_unless_permanent() {
        let mut plan = Attempts::new(ALL);
        let step = plan.next::<()>(Outcome::NotStarted(other("connection refused")));
        assert!(
            matches!(
                step,
                Step::Retry {
                    close: Close::Quit,
                    attempt: 1,
                    method: Method::Fxp,
                    ..
                }
            ),
            "{step:?}"
        );
        // A missing source file (`550` on `SIZE`) is no better on the next attempt.
        let step = plan.next::<()>(Outcome::NotStarted(refused(550)));
        assert!(matches!(step, Step::GiveUp(Close::Quit, _)), "{step:?}");
    }

    #[test]
    fn every_method_failing_ends_the_attempt_with_each_reason() {
        let mut plan = Attempts::new(Choices { retries: 0, ..ALL });
        plan.next(negotiation("fxp refused"));
        plan.next(transfer("reverse stalled"));
        let step = plan.next(negotiation("relay refused"));
        // The last method negotiated only: nothing to abort.
        let Step::GiveUp(Close::Quit, FxpError::Methods(tried)) = step else {
            panic!("{step:?}")
        };
        let tried: Vec<_> = tried.iter().map(|(m, e)| format!("{m}: {e}")).collect();
        assert_eq!(
            tried,
            [
                "fxp: fxp refused",
                "reverse_fxp: reverse stalled",
                "relay: relay refused"
            ]
        );
    }

    #[test]
    fn a_last_method_failing_in_transfer_aborts() {
        let mut plan = Attempts::new(Choices {
            reverse: true,
            relay_fallback: false,
            retries: 0,
            ..ALL
        });
        let step = plan.next(transfer("stalled"));
        // One method tried: its error as itself.
        assert!(
            matches!(&step, Step::GiveUp(Close::Abort, FxpError::Other(t)) if t == "stalled"),
            "{step:?}"
        );
    }

    /// A destination that stopped taking the file is a server's fault: the same method
    /// again, on fresh sessions where the lost one had a reply outstanding, LOST_AGAIN
    /// times per attempt; one more loss moves on.
    #[test]
    fn a_lost_file_runs_the_same_method_again_a_few_times_per_attempt() {
        let lost = || Outcome::<()>::Failed(Fail::Lost(other("silent")));
        let mut plan = Attempts::new(ALL);
        for n in 0..LOST_AGAIN {
            assert_eq!(
                plan.losses(),
                n,
                "each loss makes the next try more patient"
            );
            let step = plan.next(lost());
            assert!(
                matches!(step, Step::Reconnect(Method::Fxp, Close::Lost)),
                "{step:?}"
            );
        }
        let step = plan.next(lost());
        assert!(
            matches!(step, Step::Reconnect(Method::ReverseFxp, Close::Lost)),
            "{step:?}"
        );
        // A new attempt may run a method again once more, patient as the first.
        plan.next::<()>(negotiation("reverse refused"));
        let step = plan.next::<()>(transfer("relay broke"));
        assert!(
            matches!(
                step,
                Step::Retry {
                    method: Method::Fxp,
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(plan.losses(), 0);
        let step = plan.next(lost());
        assert!(
            matches!(step, Step::Reconnect(Method::Fxp, Close::Lost)),
            "{step:?}"
        );
        assert!(lost().method_error().is_some());
    }

    #[test]
    fn the_last_methods_code_decides_whether_to_retry() {
        // A 5xx refusal of PORT, then a 425 of the relay: worth another attempt.
        let mut plan = Attempts::new(Choices {
            reverse: true,
            ..ALL
        });
        plan.next::<()>(Outcome::Failed(Fail::Negotiation(refused(500))));
        let step = plan.next::<()>(Outcome::Failed(Fail::Transfer(refused(425))));
        assert!(matches!(step, Step::Retry { .. }), "{step:?}");
        // The other way round: the last answer is permanent.
        plan.next::<()>(Outcome::Failed(Fail::Transfer(refused(425))));
        let step = plan.next::<()>(Outcome::Failed(Fail::Negotiation(refused(502))));
        assert!(matches!(step, Step::GiveUp(Close::Quit, _)), "{step:?}");
    }

    #[test]
    fn retries_start_afresh_until_none_are_left() {
        let mut plan = Attempts::new(Choices {
            relay_fallback: false,
            ..ALL
        });
        let mut delays = vec![];
        let error = loop {
            plan.next(negotiation("fxp refused"));
            match plan.next(negotiation("reverse refused")) {
                Step::Retry {
                    attempt,
                    after,
                    error,
                    method,
                    ..
                } => {
                    assert_eq!(attempt as usize, delays.len() + 1);
                    assert_eq!(method, Method::Fxp);
                    // Each attempt's own failures only.
                    assert!(
                        matches!(&error, FxpError::Methods(t) if t.len() == 2),
                        "{error}"
                    );
                    delays.push(after.as_millis());
                }
                Step::GiveUp(_, e) => break e,
                step => panic!("{step:?}"),
            }
        };
        assert_eq!(delays, [500, 1000]);
        assert_eq!(plan.attempt(), 3);
        assert!(
            matches!(&error, FxpError::Methods(t) if t.len() == 2),
            "{error}"
        );
    }

    #[test]
    fn a_copy_after_retries_counts_its_attempts() {
        let mut plan = Attempts::new(ALL);
        plan.next::<()>(Outcome::NotStarted(other("timeout")));
        plan.next::<()>(Outcome::NotStarted(other("timeout")));
        assert!(matches!(plan.next(Outcome::Copied(())), Step::Done(())));
        assert_eq!(plan.attempt(), 3);
    }

    #[test]
    fn only_a_refusal_about_the_data_connection_lets_another_method_try() {
        let kind = |e| match Fail::started(e) {
            Fail::Transfer(_) => "transfer",
            Fail::Fatal(_) => "fatal",
            Fail::Negotiation(_) => "negotiation",
            Fail::Lost(_) => "lost",
        };
        assert_eq!(kind(refused(425)), "transfer");
        assert_eq!(kind(refused(426)), "transfer");
        assert_eq!(kind(refused(522)), "transfer");
        assert_eq!(kind(FxpError::Stalled(Duration::from_secs(1))), "transfer");
        assert_eq!(kind(other("short file")), "transfer");
        assert_eq!(kind(refused(550)), "fatal");
        assert_eq!(kind(refused(553)), "fatal");
        assert_eq!(kind(refused(451)), "fatal");
    }

    #[test]
    fn methods_fail_aloud_but_a_failed_start_does_not() {
        assert!(negotiation("x").method_error().is_some());
        assert!(transfer("x").method_error().is_some());
        let fatal: Outcome<()> = Outcome::Failed(Fail::Fatal(refused(550)));
        assert!(fatal.method_error().is_some());
        let short: Outcome<()> = Outcome::Mismatch(FxpError::SizeMismatch { src: 2, dst: 1 });
        assert!(short.method_error().is_some());
        assert!(
            Outcome::<()>::NotStarted(other("x"))
                .method_error()
                .is_none()
        );
        assert!(Outcome::Copied(()).method_error().is_none());
    }

    #[test]
    fn the_backoff_doubles_up_to_a_minute() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [500, 1000, 2000, 4000]);
        assert_eq!(backoff(8), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(ms(0), 500);
    }
}
