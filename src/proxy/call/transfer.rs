//! Transfers of an answered queue call from one agent to another, as sipdesk sees them pass
//! through the call's dialog. The PBX does the transfer; sipdesk follows it so the record lists
//! each agent with their times, the agents' states follow who holds the call, and the helpdesks
//! assign the ticket to the agent who has it last.
//!
//! Followed only on inbound calls whose answering group has `allow_transfer = true`, and only
//! what comes from the agent's side of the dialog:
//! - a REFER (RFC 3515): the extension is the user part of its Refer-To (an attended transfer's
//!   `?Replaces=` does not change it). The outcome comes back in NOTIFYs (`Event: refer`, an
//!   `id` equal to the REFER's CSeq when present) whose `message/sipfrag` body (RFC 3420) starts
//!   with a status line: a final 2xx means the transfer is done, any other final status that it
//!   failed, 1xx nothing yet. A REFER with `Refer-Sub: false` accepted with a 2xx that says
//!   `Refer-Sub: false` too (RFC 4488) gets no NOTIFY at all, so the 2xx counts as done. A
//!   non-2xx answer to the REFER is a failed transfer. Only the last REFER is followed.
//! - a connected-line update, as Asterisk and FreeSWITCH send one into the bridged dialog once
//!   they have transferred the call themselves: a re-INVITE or UPDATE whose P-Asserted-Identity
//!   (RFC 3325; a `sip:` user or a `tel:` number; the PBX is a trusted peer) is another
//!   configured agent than the one holding the call, or the extension a pending REFER named
//!   (any other identity, an E.164 number say, is not a transfer). It counts when it arrives (a refused re-INVITE sent again names the same
//!   extension, which then holds the call already).
//!
//! With `allow_transfer = false` a REFER from the agent's side is answered 403 and not sent on;
//! connected-line updates are sent on and not followed. Requests from the caller's side, and
//! transfers on outbound calls, pass as any other request.
//!
//! A REFER may hand the call to any extension, configured as an agent or not (the event says
//! which).
//! The agent who hands the call on starts their wrap-up then; the one who takes it counts as busy
//! on the call when configured (an extension sipdesk does not route to is not tracked), until
//! the call ends or is handed on again. The call ends for sipdesk when its dialog ends, usually
//! the first agent's BYE after a blind transfer, though the PBX carries the conversation on
//! without it: the record's end, and the last agent's `until`, are that moment, and nothing is
//! held past it. A REFER whose outcome has not come when the call ends is noted and not counted.
//! The agent who took the call is then in wrap-up and, after it, available in sipdesk's eyes
//! though still talking through the PBX, like an agent on any call that does not pass through
//! sipdesk: a queue call offered to them meanwhile gets their phone's 486 Busy Here and moves
//! on to the next agent at once.

use super::{Call, Leg, State};
use crate::call::Direction;
use crate::proxy::dialog::Side;
use crate::proxy::{Core, Now};
use crate::routing::Extension;
use crate::sip::message::{self, Request, Response};
use crate::sip::syntax::{self, Uri};
use crate::sip::transaction::TxKey;

/// A REFER from the agent's side that was sent on, whose outcome is awaited.
#[derive(Clone, Debug)]
pub(super) struct Referral {
    /// The extension its Refer-To names.
    target: Extension,
    /// Its CSeq number: the `id` of its NOTIFYs.
    cseq: u32,
    /// It asked for no subscription (`Refer-Sub: false`).
    no_notify: bool,
}

/// What a final status says of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed,
}

impl Core {
    /// A request inside a call's dialog, before it is sent on. Returns whether sipdesk answered
    /// it itself (a REFER refused with 403), so it must not be sent on.
    pub(in crate::proxy) fn transfer_request(
        &mut self,
        now: Now,
        key: &TxKey,
        call_key: u64,
        side: Side,
        request: &Request,
    ) -> bool {
        if !matches!(
            request.method(),
            rsip::Method::Refer
                | rsip::Method::Notify
                | rsip::Method::Invite
                | rsip::Method::Update
        ) {
            return false;
        }
        let Some(mut call) = self.take(call_key) else {
            return false;
        };
        let refused = if call.direction == Direction::Inbound
            && call.state == State::Answered
            && call.in_answered_dialog(request)
        {
            self.follow(now, key, &mut call, side, request)
        } else {
            false
        };
        self.put(call);
        refused
    }

    fn follow(
        &mut self,
        now: Now,
        key: &TxKey,
        call: &mut Call,
        side: Side,
        request: &Request,
    ) -> bool {
        match (request.method(), side) {
            (rsip::Method::Refer, Side::Agent) => {
                let target = message::header_value(&request.message.headers, "Refer-To");
                let extension = target.as_deref().and_then(refer_to_extension);
                let holder = holder_name(call);
                if let Some(group) = self.group_refusing_transfers(call) {
                    let named = target.as_deref().unwrap_or("nobody");
                    self.event(
                        now,
                        call,
                        "transfer",
                        format!(
                            "{holder} asked to transfer the call to {}: refused (403), group {group} does not allow transfers",
                            extension.as_ref().map_or(named, Extension::as_str)
                        ),
                    );
                    let warning = format!("399 sipdesk \"group {group} does not allow transfers\"");
                    self.reply(
                        now,
                        key,
                        request,
                        403,
                        "Forbidden",
                        &[("Warning", &warning)],
                    );
                    return true;
                }
                match extension {
                    Some(extension) => {
                        self.event(
                            now,
                            call,
                            "transfer",
                            format!("{holder} transfers the call to {extension} (REFER)"),
                        );
                        call.referral = Some(Referral {
                            target: extension,
                            cseq: request.cseq.seq,
                            no_notify: refer_sub_false(&request.message.headers),
                        });
                    }
                    None => {
                        call.referral = None;
                        self.event(
                            now,
                            call,
                            "transfer",
                            format!(
                                "{holder} sent a REFER to {}: no extension to follow",
                                target.as_deref().unwrap_or("nobody")
                            ),
                        );
                    }
                }
            }
            (rsip::Method::Notify, Side::Caller) => {
                let Some(referral) = &call.referral else {
                    return false;
                };
                if !is_refer_event(request, referral.cseq) {
                    return false;
                }
                let Some(status) = sipfrag_status(request) else {
                    return false;
                };
                let (target, line) = (referral.target.clone(), status.1);
                match outcome(status.0) {
                    None => {}
                    Some(Outcome::Done) => {
                        call.referral = None;
                        self.hand_over(now, call, target, &format!("NOTIFY {line}"));
                    }
                    Some(Outcome::Failed) => {
                        call.referral = None;
                        self.event(
                            now,
                            call,
                            "transfer",
                            format!(
                                "the transfer to {target} failed (NOTIFY {line}): {} keeps the call",
                                holder_name(call)
                            ),
                        );
                    }
                }
            }
            (rsip::Method::Invite | rsip::Method::Update, Side::Agent) => {
                if self.group_refusing_transfers(call).is_some() {
                    return false;
                }
                let Some(extension) = asserted_extension(&request.message.headers) else {
                    return false;
                };
                if call.legs.last().is_some_and(|l| l.extension == extension) {
                    return false;
                }
                // An identity that is no agent's (a PBX asserting an E.164 number, a trunk) is
                // not taken for a transfer: only one of the configured agents, or the
                // extension a pending REFER named.
                let known = self.is_agent(&extension)
                    || call
                        .referral
                        .as_ref()
                        .is_some_and(|r| r.target == extension);
                if !known {
                    return false;
                }
                if call
                    .referral
                    .as_ref()
                    .is_some_and(|r| r.target == extension)
                {
                    call.referral = None;
                }
                let how = format!("P-Asserted-Identity in {}", request.method());
                self.hand_over(now, call, extension, &how);
            }
            _ => {}
        }
        false
    }

    /// The final answer to a request sent on inside a call's dialog (`response` is `None` when
    /// none came): a REFER refused means the transfer failed; one accepted without a
    /// subscription (RFC 4488) is done, as nothing more will be told.
    pub(in crate::proxy) fn transfer_answered(
        &mut self,
        now: Now,
        request: &Request,
        status: u16,
        response: Option<&Response>,
    ) {
        if request.method() != rsip::Method::Refer {
            return;
        }
        let Some((call_key, Side::Agent)) = self.dialog_of(request) else {
            return;
        };
        let Some(mut call) = self.take(call_key) else {
            return;
        };
        let referral = call
            .referral
            .as_ref()
            .filter(|r| call.state == State::Answered && r.cseq == request.cseq.seq)
            .cloned();
        if let Some(referral) = referral {
            if !(200..300).contains(&status) {
                call.referral = None;
                self.event(
                    now,
                    &call,
                    "transfer",
                    format!(
                        "the transfer to {} failed (REFER answered {status}): {} keeps the call",
                        referral.target,
                        holder_name(&call)
                    ),
                );
            } else if referral.no_notify
                && response.is_some_and(|r| refer_sub_false(&r.message.headers))
            {
                call.referral = None;
                let how = format!("REFER answered {status} with Refer-Sub: false");
                self.hand_over(now, &mut call, referral.target, &how);
            }
        }
        self.put(call);
    }

    /// The call goes from the agent holding it to `extension`.
    fn hand_over(&mut self, now: Now, call: &mut Call, extension: Extension, how: &str) {
        let Some(previous) = call.legs.last().cloned() else {
            return;
        };
        if previous.extension == extension {
            return;
        }
        if previous.counted {
            let wrap_up = super::wrap_up_of(call, &previous.extension);
            self.agents.finish(&previous.extension, now.mono + wrap_up);
        }
        let configured = call
            .config
            .groups
            .iter()
            .any(|g| g.position(&extension).is_some());
        if configured {
            self.agents.engage(&extension);
        }
        let note = if configured {
            ""
        } else {
            ", not a configured agent"
        };
        self.event(
            now,
            call,
            "transfer",
            format!(
                "{} transferred the call to {extension} ({how}){note}",
                previous.extension
            ),
        );
        call.legs.push(Leg {
            extension,
            from: now.wall,
            counted: configured,
        });
    }

    /// The answering group, when it does not allow transfers.
    fn group_refusing_transfers(&self, call: &Call) -> Option<String> {
        let name = call.answer.as_ref().and_then(|a| a.group.as_ref())?;
        let allowed = call
            .config
            .groups
            .by_name(name)
            .is_some_and(|g| call.config.groups.get(g).allow_transfer);
        (!allowed).then(|| name.to_string())
    }

    /// A call ends with a REFER whose outcome never came: said, not counted.
    pub(super) fn transfer_unsettled(&mut self, now: Now, call: &mut Call) {
        if let Some(referral) = call.referral.take() {
            self.event(
                now,
                call,
                "transfer",
                format!(
                    "the call ended before the transfer to {} was known to succeed: not counted",
                    referral.target
                ),
            );
        }
    }
}

/// Who holds the call now, for events.
fn holder_name(call: &Call) -> String {
    call.legs
        .last()
        .map_or_else(|| "the agent".to_owned(), |l| l.extension.to_string())
}

/// What a final status says of a transfer; `None` for a provisional one.
fn outcome(status: u16) -> Option<Outcome> {
    match status {
        100..=199 => None,
        200..=299 => Some(Outcome::Done),
        _ => Some(Outcome::Failed),
    }
}

/// The extension a Refer-To names: the user part of its SIP URI.
fn refer_to_extension(value: &str) -> Option<Extension> {
    match syntax::parse_name_addr(value).ok()?.uri {
        Uri::Sip(uri) => Extension::parse(&uri.user_unescaped()?).ok(),
        Uri::Other { .. } => None,
    }
}

/// The extension a P-Asserted-Identity names: the user of its first `sip:`/`sips:` URI, else
/// the number of its `tel:` URI.
fn asserted_extension(headers: &rsip::Headers) -> Option<Extension> {
    let mut tel = None;
    for value in message::header_values(headers, "P-Asserted-Identity") {
        for entry in syntax::split_commas(&value).unwrap_or_default() {
            match syntax::parse_name_addr(entry).map(|n| n.uri) {
                Ok(Uri::Sip(uri)) => {
                    if let Some(extension) =
                        uri.user_unescaped().and_then(|u| Extension::parse(&u).ok())
                    {
                        return Some(extension);
                    }
                }
                Ok(Uri::Other { scheme, text }) if scheme.eq_ignore_ascii_case("tel") => {
                    let number = text
                        .split_once(':')
                        .map_or(text.as_str(), |(_, n)| n)
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    tel = tel.or_else(|| Extension::parse(&number).ok());
                }
                _ => {}
            }
        }
    }
    tel
}

/// Whether a NOTIFY reports on the REFER with CSeq `cseq`: `Event: refer`, with that `id` or
/// none (RFC 3515 §2.4.6).
fn is_refer_event(request: &Request, cseq: u32) -> bool {
    let Some(event) = message::header_value(&request.message.headers, "Event") else {
        return false;
    };
    let mut parts = event.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("refer"))
    {
        return false;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("id"))
        .is_none_or(|(_, id)| id.trim().parse::<u32>() == Ok(cseq))
}

/// The status line a `message/sipfrag` body starts with: the code and the line after
/// `SIP/2.0 `.
fn sipfrag_status(request: &Request) -> Option<(u16, String)> {
    let content_type = message::header_value(&request.message.headers, "Content-Type")?;
    let media = content_type.split(';').next()?.trim();
    if !media.eq_ignore_ascii_case("message/sipfrag") {
        return None;
    }
    let body = std::str::from_utf8(&request.message.body).ok()?;
    let line = body.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code = rest.get(..3)?.parse::<u16>().ok()?;
    (100..700).contains(&code).then(|| (code, rest.to_owned()))
}

/// Whether the headers say `Refer-Sub: false` (RFC 4488).
fn refer_sub_false(headers: &rsip::Headers) -> bool {
    message::header_value(headers, "Refer-Sub").is_some_and(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("false")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_of_a_refer_to_is_its_user_part() {
        let ext = |v: &str| refer_to_extension(v).map(|e| e.to_string());
        assert_eq!(ext("<sip:2002@pbx.example.com>").as_deref(), Some("2002"));
        assert_eq!(
            ext("<sip:2002@pbx;user=phone?Replaces=abc%40pbx%3Bto-tag%3D1%3Bfrom-tag%3D2>")
                .as_deref(),
            Some("2002")
        );
        assert_eq!(ext("sip:pbx.example.com"), None);
        assert_eq!(ext("<tel:+34911239613>"), None);
        assert_eq!(ext("not a uri"), None);
    }

    #[test]
    fn the_asserted_identity_is_a_sip_user_or_else_a_tel_number() {
        let headers =
            |v: &str| -> rsip::Headers { vec![message::header("P-Asserted-Identity", v)].into() };
        let ext = |v: &str| asserted_extension(&headers(v)).map(|e| e.to_string());
        assert_eq!(ext("\"Bea\" <sip:2002@10.0.0.1>").as_deref(), Some("2002"));
        assert_eq!(
            ext("<tel:2003;phone-context=pbx>, \"Bea\" <sip:2002@10.0.0.1>").as_deref(),
            Some("2002")
        );
        assert_eq!(ext("<tel:2003>").as_deref(), Some("2003"));
        assert_eq!(ext("<sip:10.0.0.1>"), None);
    }

    #[test]
    fn only_final_sipfrag_statuses_decide() {
        assert_eq!(outcome(100), None);
        assert_eq!(outcome(180), None);
        assert_eq!(outcome(200), Some(Outcome::Done));
        assert_eq!(outcome(486), Some(Outcome::Failed));
        assert_eq!(outcome(603), Some(Outcome::Failed));
    }
}
