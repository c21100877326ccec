//! A call sipdesk answers itself: voicemail. When a call's options are exhausted and its group's
//! final action is `voicemail`, sipdesk becomes the called party (a UAS, RFC 3261 §8.2 and
//! §13.3): it answers the caller's SDP offer ([`crate::media::sdp`]) with 200 OK, resends that
//! answer until the ACK comes (§13.3.1.4: T1 doubling up to T2, over UDP), and hands a media
//! session (greeting, tone, recording) to the I/O loop as [`MediaOrder::Start`]. The call stays
//! sans-io: the session's end comes back as [`Core::on_media_ended`].
//!
//! Inside the dialog sipdesk answers for itself: a re-INVITE gets a new answer (hold and
//! unhold reach the session), BYE ends the recording, OPTIONS and INFO get 200, an UPDATE with
//! a body 488 (sipdesk does not renegotiate there), anything else 501. The session's own end
//! (`#`, silence, maximum length) makes sipdesk send BYE.
//!
//! What becomes of it: a recording with audio is a `voicemail` call with the file and its
//! duration; a caller who left before the tone ended (or said nothing at all) is a missed
//! call, with the reason that sent it to voicemail, and leaves no file.
//!
//! Decisions where the issue was silent:
//! - An INVITE without an offer (offer in the 200, RFC 3261 §13.2.1) is not answered by
//!   sipdesk: it takes the `reject` path (480) with a log line, as do calls beyond
//!   `[media] max_sessions` and calls while no port is free.
//! - An offer sipdesk cannot read is answered 400, one without PCMU/PCMA 488 with a Warning
//!   naming why; the call is recorded as missed.
//! - A re-INVITE that moves the media to another address is answered, but the session keeps
//!   sending where it started (symmetric RTP from the caller's signalling address still works).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Call, Core, Now, Own, State, Timer};
use crate::call::{EndedBy, MissedReason, Outcome};
use crate::media::runner::{Control, MediaError, Recorded, Spec};
use crate::media::sdp::{self, Negotiated, SessionVersion};
use crate::media::session::{End, Settings};
use crate::proxy::dialog::{Dialog, Side};
use crate::proxy::{MediaOrder, Output};
use crate::sip::message::{self, Request};
use crate::sip::transaction::TxKey;

/// What a call answered by sipdesk itself keeps.
pub(in crate::proxy) struct Voicemail {
    negotiated: Negotiated,
    session: SessionVersion,
    /// sipdesk's RTP address, as its answers name it.
    local: SocketAddr,
    /// The last 200 OK (to the INVITE or a re-INVITE), resent until its ACK (UDP only), with
    /// its CSeq number, the resending's round and how long it goes on.
    ok: Option<Bytes>,
    ok_cseq: u32,
    round: u32,
    interval: Duration,
    resend_until: std::time::Instant,
    /// Why the call reached voicemail (kept as the missed reason when nothing is recorded).
    pub(super) reason: MissedReason,
    /// Whether the caller hung up (or an admin ended the call): the session was told to stop.
    stopped: Option<EndedBy>,
    /// What was recorded, once the session is over.
    pub(super) left: Option<crate::call::Voicemail>,
}

impl Core {
    /// Answers the call and starts its voicemail session. Returns `false` when sipdesk cannot
    /// (no media configured, no offer, no free session): the caller then gets the `reject`
    /// path. A refused offer is answered here (400, 488) and ends the call.
    pub(super) fn voicemail(&mut self, now: Now, call: &mut Call, reason: MissedReason) -> bool {
        let Some(place) = self.settings.media.clone() else {
            return false;
        };
        if self.draining {
            tracing::info!(call = %call.id, "voicemail: sipdesk is stopping, the call is rejected");
            return false;
        }
        if call.invite.message.body.is_empty() {
            tracing::warn!(call = %call.id, "voicemail: the INVITE has no SDP offer, which sipdesk needs to answer it; the call is rejected");
            return false;
        }
        let (server_tx, invite) = (call.server_tx, call.invite.clone());
        let negotiated = match sdp::parse(&invite.message.body) {
            Err(error) => {
                let warning = format!("399 sipdesk \"{error}\"");
                self.reply(
                    now,
                    &server_tx,
                    &invite,
                    400,
                    "Bad Request",
                    &[("Warning", &warning)],
                );
                self.event(
                    now,
                    call,
                    "voicemail",
                    format!("the caller's SDP cannot be read: {error}"),
                );
                self.end(now, call, Outcome::Missed, Some(reason), None);
                return true;
            }
            Ok(offer) => match sdp::negotiate(&offer) {
                Ok(negotiated) => negotiated,
                Err(why) => {
                    let warning = format!("304 sipdesk \"{why}\"");
                    self.reply(
                        now,
                        &server_tx,
                        &invite,
                        488,
                        "Not Acceptable Here",
                        &[("Warning", &warning)],
                    );
                    self.event(now, call, "voicemail", format!("not answered: {why}"));
                    self.end(now, call, Outcome::Missed, Some(reason), None);
                    return true;
                }
            },
        };
        let Some(lease) = place.ports.take() else {
            tracing::warn!(call = %call.id, sessions = place.ports.in_use(), "voicemail: every media session is in use ([media] max_sessions) or no RTP port is free; the call is rejected");
            self.event(
                now,
                call,
                "voicemail",
                "no media session free: rejected".to_owned(),
            );
            return false;
        };
        let Some(group) = call
            .route
            .as_ref()
            .map(|r| call.config.groups.get(r.owner()))
        else {
            return false;
        };
        let greeting_reason = if call.offered_any {
            None
        } else {
            call.route.as_ref().and_then(crate::routing::Route::reason)
        };
        let greeting = group
            .greetings
            .for_reason(greeting_reason)
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::media::greeting::Greeting::from_samples(&[])));
        let media = &call.config.media;
        // Should the session never report (it is bounded by these), the call ends anyway.
        let limit = greeting.duration()
            + Duration::from_secs(1)
            + media.voicemail_max
            + media.voicemail_silence
            + Duration::from_secs(30);
        let local = SocketAddr::new(place.ip, lease.port());
        let mut session = SessionVersion::new(now.wall.as_microsecond().unsigned_abs());
        let body = sdp::answer(&negotiated, local, &mut session);
        let tag = format!("sd{:x}", self.next_counter());
        let ok = self.answer_with_sdp(&invite, &tag, body);
        self.tx.respond(now.mono, &server_tx, &ok);
        let reliable = call.source.transport.reliable();
        let t1 = self.config.sip.timers.t1;
        call.agent_tag = Some(tag);
        call.dialog = Some(Dialog::answered_here(
            &invite,
            &ok,
            call.source,
            call.caller_contact.clone(),
        ));
        let file = place.directory.join(format!("{}.wav", call.id));
        let spec = Spec {
            remote: negotiated.remote,
            signalling_source: call.source.addr.ip(),
            settings: Settings {
                law: negotiated.codec.law,
                payload_type: negotiated.codec.payload_type,
                telephone_event: negotiated.telephone_event,
                ssrc: fastrand::u32(..),
                first_sequence: fastrand::u16(..),
                first_timestamp: fastrand::u32(..),
                silence: media.voicemail_silence,
                max_length: media.voicemail_max,
            },
            greeting,
            file,
        };
        let held = !negotiated.direction.sends();
        self.out.push(Output::Media(MediaOrder::Start {
            call: call.key,
            lease,
            spec: Box::new(spec),
        }));
        if held {
            self.media_control(call.key, Control::Hold(true));
        }
        call.state = State::Voicemail;
        call.voicemail = Some(Box::new(Voicemail {
            negotiated,
            session,
            local,
            ok: (!reliable).then(|| Bytes::from(message::encode_response(&ok))),
            ok_cseq: invite.cseq.seq,
            round: 0,
            interval: t1,
            resend_until: now.mono + 64 * t1,
            reason,
            stopped: None,
            left: None,
        }));
        self.event(
            now,
            call,
            "voicemail",
            format!("sipdesk answers: greeting, tone and recording (RTP at {local})"),
        );
        if !reliable {
            self.schedule(
                now.mono + t1,
                Timer::OkResend {
                    call: call.key,
                    round: 0,
                },
            );
        }
        self.schedule(now.mono + 64 * t1, Timer::AckWait { call: call.key });
        self.schedule(now.mono + limit, Timer::VoicemailLimit { call: call.key });
        true
    }

    /// An ACK from the caller: it acknowledges the 200 OK with its CSeq number.
    pub(in crate::proxy) fn voicemail_ack(&mut self, key: u64, request: &Request) {
        let Some(vm) = self.calls.get_mut(&key).and_then(|c| c.voicemail.as_mut()) else {
            return;
        };
        if request.cseq.seq == vm.ok_cseq {
            vm.ok = None;
        }
    }

    /// The session never reported, beyond every limit it has: the call ends (sipdesk hangs
    /// up) as missed, and whatever the session may still say is ignored.
    pub(super) fn voicemail_limit(&mut self, now: Now, key: u64) {
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.state == State::Voicemail {
            tracing::error!(call = %call.id, "voicemail: the media session did not end within its limits; the call is ended");
            self.media_control(key, Control::Stop);
            if call
                .voicemail
                .as_ref()
                .is_some_and(|v| v.stopped != Some(EndedBy::Caller))
            {
                self.send_in_dialog(now, &call, Side::Caller, rsip::Method::Bye, Own::Bye);
            }
            let reason = call.voicemail.as_ref().map(|v| v.reason);
            self.event(
                now,
                &call,
                "voicemail",
                "the recording did not finish: ended".to_owned(),
            );
            self.end(now, &mut call, Outcome::Missed, reason, Some(EndedBy::Lost));
        }
        self.put(call);
    }

    /// A 200 OK to `request` from sipdesk as the called party, with an SDP body.
    fn answer_with_sdp(&self, request: &Request, tag: &str, body: String) -> rsip::Response {
        let mut ok = request.response(200, "OK", tag);
        let local = &self.settings.local;
        let transport = match self.settings.pbx.transport {
            crate::sip::peer::Transport::Tcp => ";transport=tcp",
            crate::sip::peer::Transport::Udp => "",
        };
        for (name, value) in [
            (
                "Contact",
                format!("<sip:sipdesk@{}:{}{transport}>", local.host, local.port),
            ),
            ("Allow", crate::sip::wire::ALLOW.to_owned()),
            ("Supported", String::new()),
            ("Content-Type", "application/sdp".to_owned()),
        ] {
            if !value.is_empty() {
                ok.headers.push(message::header(name, &value));
            }
        }
        ok.body = body.into_bytes();
        ok
    }

    fn media_control(&mut self, call: u64, control: Control) {
        self.out
            .push(Output::Media(MediaOrder::Control { call, control }));
    }

    /// The 200 OK again, until its ACK (RFC 3261 §13.3.1.4, §14.2), for 64·T1 at most.
    pub(super) fn resend_ok(&mut self, now: Now, key: u64, round: u32) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.state != State::Voicemail {
            return;
        }
        let peer = call.source;
        let t2 = self.config.sip.timers.t2;
        let Some(vm) = call.voicemail.as_mut() else {
            return;
        };
        if vm.round != round || now.mono >= vm.resend_until {
            return;
        }
        let Some(ok) = vm.ok.clone() else {
            return;
        };
        vm.interval = (vm.interval * 2).min(t2);
        let at = now.mono + vm.interval;
        self.send(peer, ok);
        self.schedule(at, Timer::OkResend { call: key, round });
    }

    /// A request inside the dialog of a call sipdesk answered itself.
    pub(in crate::proxy) fn voicemail_request(
        &mut self,
        now: Now,
        key: TxKey,
        call: u64,
        request: Request,
    ) {
        let Some(mut taken) = self.take(call) else {
            return;
        };
        if request.to.tag() != taken.agent_tag.as_deref() {
            // The caller's dialog with sipdesk has sipdesk's tag; anything else is no dialog.
            self.reply(
                now,
                &key,
                &request,
                481,
                "Call/Transaction Does Not Exist",
                &[],
            );
            self.put(taken);
            return;
        }
        match request.method() {
            rsip::Method::Bye => {
                self.reply(now, &key, &request, 200, "OK", &[]);
                self.stop_voicemail(now, &mut taken, EndedBy::Caller);
            }
            rsip::Method::Invite => self.voicemail_reinvite(now, key, &mut taken, &request),
            rsip::Method::Options | rsip::Method::Info => {
                self.reply(
                    now,
                    &key,
                    &request,
                    200,
                    "OK",
                    &[("Allow", crate::sip::wire::ALLOW)],
                );
            }
            rsip::Method::Update if request.message.body.is_empty() => {
                self.reply(now, &key, &request, 200, "OK", &[]);
            }
            rsip::Method::Update => {
                let warning = "399 sipdesk \"sipdesk changes media with re-INVITE only\"";
                self.reply(
                    now,
                    &key,
                    &request,
                    488,
                    "Not Acceptable Here",
                    &[("Warning", warning)],
                );
            }
            _ => self.reply(
                now,
                &key,
                &request,
                501,
                "Not Implemented",
                &[("Allow", crate::sip::wire::ALLOW)],
            ),
        }
        self.put(taken);
    }

    /// A re-INVITE: a new offer, answered from the same port; hold and unhold reach the
    /// session. One without an offer gets sipdesk's last answer as its offer is not needed:
    /// the session goes on unchanged.
    fn voicemail_reinvite(&mut self, now: Now, key: TxKey, call: &mut Call, request: &Request) {
        let Some(tag) = call.agent_tag.clone() else {
            return;
        };
        let Some(vm) = call.voicemail.as_mut() else {
            return;
        };
        let offer = if request.message.body.is_empty() {
            Ok(vm.negotiated.clone())
        } else {
            match sdp::parse(&request.message.body) {
                Err(error) => Err((400, "Bad Request", error.to_string())),
                Ok(offer) => sdp::negotiate(&offer)
                    .map_err(|why| (488, "Not Acceptable Here", why.to_string())),
            }
        };
        let negotiated = match offer {
            Ok(n) => n,
            Err((status, phrase, why)) => {
                // The session goes on as it was (RFC 3261 §14.2).
                let warning = format!("399 sipdesk \"{why}\"");
                self.reply(now, &key, request, status, phrase, &[("Warning", &warning)]);
                return;
            }
        };
        if negotiated.codec != vm.negotiated.codec {
            // The session goes on with the codec it started with (RFC 3264 §8: a refused
            // re-offer leaves the session as it was).
            let warning = format!(
                "305 sipdesk \"this call stays on {}\"",
                vm.negotiated.codec.name()
            );
            self.reply(
                now,
                &key,
                request,
                488,
                "Not Acceptable Here",
                &[("Warning", &warning)],
            );
            return;
        }
        let held = !negotiated.direction.sends();
        let moved =
            !negotiated.remote.ip().is_unspecified() && negotiated.remote != vm.negotiated.remote;
        let remote = negotiated.remote;
        let body = sdp::answer(&negotiated, vm.local, &mut vm.session);
        vm.negotiated = negotiated;
        let ok = self.answer_with_sdp(request, &tag, body);
        self.tx.respond(now.mono, &key, &ok);
        if !call.source.transport.reliable() {
            let t1 = self.config.sip.timers.t1;
            if let Some(vm) = call.voicemail.as_mut() {
                vm.ok = Some(Bytes::from(message::encode_response(&ok)));
                vm.ok_cseq = request.cseq.seq;
                vm.round += 1;
                vm.interval = t1;
                vm.resend_until = now.mono + 64 * t1;
                let round = vm.round;
                self.schedule(
                    now.mono + t1,
                    Timer::OkResend {
                        call: call.key,
                        round,
                    },
                );
            }
        }
        if moved {
            self.media_control(call.key, Control::Redirect(remote));
        }
        self.media_control(call.key, Control::Hold(held));
        let word = if held { "on hold" } else { "off hold" };
        self.event(
            now,
            call,
            "voicemail",
            format!("the caller put the call {word}"),
        );
    }

    /// The caller hung up (or an admin ended the call, or sipdesk stops): the session stops and
    /// keeps what it recorded; the record is made when its result comes back.
    pub(in crate::proxy) fn stop_voicemail(&mut self, now: Now, call: &mut Call, by: EndedBy) {
        let Some(vm) = call.voicemail.as_mut() else {
            return;
        };
        if vm.stopped.is_some() {
            return;
        }
        vm.stopped = Some(by);
        let key = call.key;
        self.media_control(key, Control::Stop);
        let detail = match by {
            EndedBy::Caller => "the caller hung up",
            EndedBy::Admin => "ended by an admin",
            EndedBy::Interrupted => "sipdesk is stopping: the recording ends here",
            _ => "the caller never acknowledged the answer",
        };
        self.event(now, call, "voicemail", detail.to_owned());
    }

    /// The media session of `key` is over: sipdesk hangs up if the session ended the
    /// recording, and the call is recorded.
    pub(in crate::proxy) fn media_ended(
        &mut self,
        now: Now,
        key: u64,
        result: Result<Recorded, MediaError>,
    ) {
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.state != State::Voicemail {
            self.put(call);
            return;
        }
        let Some(mut vm) = call.voicemail.take() else {
            self.put(call);
            return;
        };
        let stopped = vm.stopped;
        if stopped != Some(EndedBy::Caller) {
            // The session ended the recording, an admin ended the call, or the caller never
            // acknowledged the answer: sipdesk hangs up.
            self.send_in_dialog(now, &call, Side::Caller, rsip::Method::Bye, Own::Bye);
        }
        let (outcome, ended_by, why) = match result {
            Ok(recorded) => {
                let end = match (recorded.end, stopped) {
                    (Some(End::Pound), _) => "pound",
                    (Some(End::Silence), _) => "silence",
                    (Some(End::NoMedia), _) => "no_media",
                    (Some(End::MaxLength), _) => "max_length",
                    (None, Some(EndedBy::Caller)) => "hangup",
                    (None, _) => "stopped",
                };
                match recorded.file {
                    Some(file) if recorded.samples > 0 => {
                        let duration_ms = recorded.samples as u64 / 8;
                        vm.left = Some(crate::call::Voicemail {
                            file: file.display().to_string(),
                            duration_ms,
                            end: end.to_owned(),
                        });
                        (
                            Outcome::Voicemail,
                            stopped,
                            format!(
                                "recorded {:.1} s, ended by {end}",
                                duration_ms as f64 / 1000.0
                            ),
                        )
                    }
                    _ => (
                        Outcome::Missed,
                        stopped,
                        format!("nothing recorded (ended by {end})"),
                    ),
                }
            }
            Err(error) => {
                let chain =
                    std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(": ");
                tracing::error!(call = %call.id, error = %chain, "voicemail: the recording failed");
                (
                    Outcome::Missed,
                    stopped,
                    format!("the recording failed: {error}"),
                )
            }
        };
        self.event(now, &call, "voicemail", why);
        let reason = (outcome == Outcome::Missed).then_some(vm.reason);
        call.voicemail = Some(vm);
        self.end(now, &mut call, outcome, reason, ended_by);
        self.put(call);
    }
}
