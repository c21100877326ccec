//! From the file as written ([`super::raw`]) to checked settings: every value parsed, every
//! reference resolved, every problem recorded with its location (not just the first).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use jiff::tz::TimeZone;

use super::diagnostic::{Seg, Source, join, keys};
use super::raw::{
    HolidayMode, RawAdmin, RawAgent, RawAgents, RawCluster, RawDatabase, RawDefaults, RawGroup,
    RawHoliday, RawHours, RawMedia, RawSip,
};
use super::{
    AdminSettings, AdminToken, AgentCodes, ClusterSettings, Config, DatabaseSettings, DatabaseUrl,
    Defaults, HostPort, Listen, MediaSettings, RawConfig, SecretSource, SipSettings, Transport,
};
use crate::media::greeting::Greeting;
use crate::phone::Region;
use crate::routing::Greetings;
use crate::routing::group::check_user_part;
use crate::routing::schedule::{IntervalRef, ScheduleError};
use crate::routing::{
    Agent, ClockTime, Extension, Group, GroupId, Groups, Holiday, HolidayDate, Interval, Overflow,
    Schedule, WeeklyHours,
};
use crate::sip::transaction::TimerSettings;
use crate::sip::wire::Limits;
use std::sync::Arc;

/// Checks the raw configuration; `None` when any error was recorded in `src`.
pub(super) fn build(raw: RawConfig, src: &mut Source<'_>) -> Option<Config> {
    let sip = raw.sip.as_ref().and_then(|sip| build_sip(sip, src));
    let database = build_database(raw.database.unwrap_or_default(), src);
    let admin = build_admin(
        raw.admin.unwrap_or_default(),
        database.as_ref().map(|d| d.state_directory.as_path()),
        src,
    );
    let agents = build_agent_codes(raw.agents.unwrap_or_default(), src);
    let media = build_media(raw.media.unwrap_or_default(), src);
    let cluster = build_cluster(raw.cluster.unwrap_or_default(), src);
    let defaults = raw.defaults.as_ref().and_then(|d| build_defaults(d, src));
    let holidays: Vec<Holiday> = raw
        .holidays
        .iter()
        .enumerate()
        .filter_map(|(i, h)| holiday(h, keys!["holidays", i], src))
        .collect();
    // Groups are checked even when [defaults] is broken, so one run reports everything.
    let groups = build_groups(
        &raw.groups,
        &raw.group_names,
        defaults.as_ref(),
        &holidays,
        src,
    );
    let helpdesks = super::helpdesk::build(
        &raw.helpdesks,
        groups.as_ref(),
        defaults.as_ref().map(|d| &d.timezone),
        src,
    );
    let sms = super::sms::build(
        &raw.sms_numbers,
        raw.sms.unwrap_or_default(),
        groups.as_ref(),
        defaults.as_ref().map(|d| d.region),
        src,
    );
    if let (Some(codes), Some(groups)) = (&agents, &groups) {
        for (code, key) in [
            (&codes.away, "away_code"),
            (&codes.available, "available_code"),
        ] {
            if let Some(group) = code
                .as_deref()
                .and_then(|c| groups.iter().find(|g| g.queues.iter().any(|q| q == c)))
            {
                src.error(
                    keys!["agents", key],
                    format!(
                        "\"{}\" is also a queue of group \"{}\"; a feature code must be a number of its own",
                        code.as_deref().unwrap_or_default(),
                        group.name
                    ),
                );
            }
        }
    }
    if src.has_errors() {
        return None;
    }
    Some(Config {
        sip: sip?,
        database: database?,
        admin: admin?,
        agents: agents?,
        media: media?,
        cluster: cluster?,
        defaults: defaults?,
        global_holidays: holidays.len(),
        groups: groups?,
        helpdesks: helpdesks?,
        sms: sms?,
    })
}

fn build_sip(sip: &RawSip, src: &mut Source<'_>) -> Option<SipSettings> {
    if sip.listen.is_empty() {
        src.error(
            keys!["sip", "listen"],
            "sip.listen is empty, so sipdesk would take no calls; add e.g. \"udp:0.0.0.0:5060\"",
        );
    }
    let mut listen = Vec::new();
    for (i, text) in sip.listen.iter().enumerate() {
        match listen_socket(text) {
            Some(l) => listen.push(l),
            None => src.error(
                keys!["sip", "listen", i],
                format!(
                    "\"{text}\" is not a socket to listen on; write \"udp:ADDRESS:PORT\" or \"tcp:ADDRESS:PORT\", e.g. \"udp:0.0.0.0:5060\""
                ),
            ),
        }
    }
    let pbx = host_port(&sip.pbx);
    if pbx.is_none() {
        src.error(
            keys!["sip", "pbx"],
            format!(
                "\"{}\" is not a host and port; write e.g. \"10.0.0.10:5060\" or \"pbx.example.com:5060\"",
                sip.pbx
            ),
        );
    }
    let mut trusted = Vec::new();
    for (i, text) in sip.trusted.iter().enumerate() {
        let net = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(net) => trusted.push(net),
            None => src.error(
                keys!["sip", "trusted", i],
                format!(
                    "\"{text}\" is not an address or CIDR block; write e.g. \"10.0.0.0/24\" or \"10.0.0.10\""
                ),
            ),
        }
    }
    let pbx_transport = match sip.pbx_transport.as_str() {
        "udp" => Some(Transport::Udp),
        "tcp" => Some(Transport::Tcp),
        other => {
            src.error(
                keys!["sip", "pbx_transport"],
                format!("\"{other}\" is not a transport; write \"udp\" or \"tcp\""),
            );
            None
        }
    };
    let advertise = match &sip.advertise {
        None => Some(None),
        Some(text) => match host_port(text) {
            Some(hp) => Some(Some(hp)),
            None => {
                src.error(
                    keys!["sip", "advertise"],
                    format!("\"{text}\" is not a host and port; write e.g. \"10.20.0.5:5060\""),
                );
                None
            }
        },
    };
    let reject_untrusted = match sip.untrusted.as_str() {
        "reject" => Some(true),
        "ignore" => Some(false),
        other => {
            src.error(
                keys!["sip", "untrusted"],
                format!("\"{other}\" is not a policy; write \"reject\" (answer 403) or \"ignore\""),
            );
            None
        }
    };
    if !(512..=65_535).contains(&sip.max_message_size) {
        src.error(
            keys!["sip", "max_message_size"],
            "max_message_size must be from 512 to 65535 bytes",
        );
    }
    if !(16..=1000).contains(&sip.max_headers) {
        src.error(
            keys!["sip", "max_headers"],
            "max_headers must be from 16 to 1000",
        );
    }
    if !(1_000..=10_000_000).contains(&sip.max_transactions) {
        src.error(
            keys!["sip", "max_transactions"],
            "max_transactions must be from 1000 to 10000000",
        );
    }
    if !(1..=1_000_000).contains(&sip.max_connections) {
        src.error(
            keys!["sip", "max_connections"],
            "max_connections must be from 1 to 1000000",
        );
    }
    let tcp_idle_timeout = duration(
        &sip.tcp_idle_timeout,
        keys!["sip", "tcp_idle_timeout"],
        (Duration::from_secs(10), Duration::from_secs(24 * 3600)),
        src,
    );
    let tcp_message_timeout = duration(
        &sip.tcp_message_timeout,
        keys!["sip", "tcp_message_timeout"],
        (Duration::from_millis(500), Duration::from_secs(300)),
        src,
    );
    let ms = Duration::from_millis;
    let t1 = duration(&sip.t1, keys!["sip", "t1"], (ms(50), ms(10_000)), src);
    let t2 = duration(&sip.t2, keys!["sip", "t2"], (ms(500), ms(60_000)), src);
    let t4 = duration(&sip.t4, keys!["sip", "t4"], (ms(500), ms(60_000)), src);
    let max_call_duration = duration(
        &sip.max_call_duration,
        keys!["sip", "max_call_duration"],
        (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600)),
        src,
    );
    let session_check = match sip.session_check.trim() {
        "off" | "" => Some(None),
        text => duration(
            text,
            keys!["sip", "session_check"],
            (Duration::from_secs(10), Duration::from_secs(24 * 3600)),
            src,
        )
        .map(Some),
    };
    if !(1..=100).contains(&sip.max_outbound_per_agent) {
        src.error(
            keys!["sip", "max_outbound_per_agent"],
            "max_outbound_per_agent must be from 1 to 100",
        );
    }
    let shutdown_grace = duration(
        &sip.shutdown_grace,
        keys!["sip", "shutdown_grace"],
        (Duration::ZERO, Duration::from_secs(3600)),
        src,
    );
    if let Some(template) = &sip.recording_url {
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            src.error(
                keys!["sip", "recording_url"],
                "recording_url must be an http:// or https:// URL template",
            );
        }
    }
    Some(SipSettings {
        listen,
        pbx: pbx?,
        pbx_transport: pbx_transport?,
        advertise: advertise?,
        trusted,
        reject_untrusted: reject_untrusted?,
        untrusted_rate: sip.untrusted_rate,
        limits: Limits {
            max_message_size: sip.max_message_size,
            max_headers: sip.max_headers,
        },
        max_transactions: sip.max_transactions,
        max_connections: sip.max_connections,
        tcp_idle_timeout: tcp_idle_timeout?,
        tcp_message_timeout: tcp_message_timeout?,
        timers: TimerSettings {
            t1: t1?,
            t2: t2?,
            t4: t4?,
        },
        max_call_duration: max_call_duration?,
        session_check: session_check?,
        max_outbound_per_agent: sip.max_outbound_per_agent,
        shutdown_grace: shutdown_grace?,
        recording_url: sip.recording_url.clone(),
        recording_header: sip.recording_header.clone(),
        tags_header: (!sip.tags_header.trim().is_empty())
            .then(|| sip.tags_header.trim().to_owned()),
    })
}

fn listen_socket(text: &str) -> Option<Listen> {
    let (transport, addr) = text.split_once(':')?;
    let transport = match transport {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return None,
    };
    Some(Listen {
        transport,
        addr: addr.parse::<SocketAddr>().ok()?,
    })
}

/// `host:port`, `host` (port 5060), `[v6]:port` or a bare IPv6 address.
fn host_port(text: &str) -> Option<HostPort> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(HostPort {
            host: ip.to_string(),
            port: 5060,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (text, 5060),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)).then(|| HostPort {
        host: host.to_owned(),
        port,
    })
}

fn build_database(raw: RawDatabase, src: &mut Source<'_>) -> Option<DatabaseSettings> {
    let state_directory = PathBuf::from(&raw.state_directory);
    let directory_ok = state_directory.is_absolute();
    if !directory_ok {
        src.error(
            keys!["database", "state_directory"],
            format!(
                "\"{}\" is not an absolute path; write e.g. \"/var/lib/sipdesk\"",
                raw.state_directory
            ),
        );
    }
    if !(1_000..=10_000_000).contains(&raw.queue_limit) {
        src.error(
            keys!["database", "queue_limit"],
            "queue_limit must be from 1000 to 10000000 records",
        );
    }
    let stop_write_timeout = duration(
        &raw.stop_write_timeout,
        keys!["database", "stop_write_timeout"],
        (Duration::from_secs(1), Duration::from_secs(600)),
        src,
    );
    let url = match DatabaseUrl::parse(&raw.url) {
        Some(url) => Some(url.resolve(&state_directory)),
        None => {
            src.error(
                keys!["database", "url"],
                format!(
                    "\"{}\" is not a database URL sipdesk knows; write \"sqlite://sipdesk.db\" or \"postgres://USER@HOST/DATABASE\"",
                    raw.url
                ),
            );
            None
        }
    };
    if !directory_ok {
        return None;
    }
    Some(DatabaseSettings {
        url: url?,
        state_directory,
        queue_limit: raw.queue_limit,
        stop_write_timeout: stop_write_timeout?,
    })
}

fn build_admin(
    raw: RawAdmin,
    state_directory: Option<&std::path::Path>,
    src: &mut Source<'_>,
) -> Option<AdminSettings> {
    let listen = match raw.listen.trim() {
        "off" => Some(None),
        text => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                src.error(
                    keys!["admin", "listen"],
                    format!("\"{text}\" is not an address and port; write e.g. \"127.0.0.1:8640\", or \"off\""),
                );
                None
            }
        },
    };
    let token = match (raw.token_file, raw.token_env) {
        (Some(_), Some(_)) => {
            src.error(
                keys!["admin", "token_env"],
                "give the admin token in token_file or token_env, not both",
            );
            None
        }
        (Some(file), None) => Some(AdminToken::Configured(SecretSource::File(file.into()))),
        (None, Some(var)) => Some(AdminToken::Configured(SecretSource::Env(var))),
        (None, None) => Some(AdminToken::Generated(state_directory?.join("admin.token"))),
    };
    let service_level = duration(
        &raw.service_level,
        keys!["admin", "service_level"],
        (Duration::from_secs(1), Duration::from_secs(3600)),
        src,
    );
    Some(AdminSettings {
        listen: listen?,
        token: token?,
        service_level: service_level?,
    })
}

fn build_cluster(raw: RawCluster, src: &mut Source<'_>) -> Option<ClusterSettings> {
    let instance = match raw.instance {
        Some(name) => {
            let name = name.trim().to_owned();
            let fine = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !fine {
                src.error(
                    keys!["cluster", "instance"],
                    format!("\"{name}\" is not an instance name: 1 to 64 letters, digits, '-', '_' or '.'"),
                );
                return None;
            }
            name
        }
        None => host_name(),
    };
    let dead_after = duration(
        &raw.dead_after,
        keys!["cluster", "dead_after"],
        // Below 10 s a busy database (its 5 s connection wait) would make instances take each
        // other for dead.
        (Duration::from_secs(10), Duration::from_secs(3600)),
        src,
    )?;
    Some(ClusterSettings {
        instance,
        dead_after,
    })
}

/// The machine's host name (the default instance name), `sipdesk` if it cannot be read.
pub(crate) fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).into_owned();
    if ok && !name.is_empty() {
        name
    } else {
        "sipdesk".to_owned()
    }
}

fn build_media(raw: RawMedia, src: &mut Source<'_>) -> Option<MediaSettings> {
    let address = match raw.address.as_deref().map(str::trim) {
        None => Some(None),
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => Some(Some(ip)),
            _ => {
                src.error(
                    keys!["media", "address"],
                    format!("\"{text}\" is not an IP address the callers can send to; write e.g. \"192.0.2.10\""),
                );
                None
            }
        },
    };
    let ports = raw
        .rtp_ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| *a >= 1024 && a < b);
    if ports.is_none() {
        src.error(
            keys!["media", "rtp_ports"],
            format!(
                "\"{}\" is not a port range; write \"FIRST-LAST\" above 1023, e.g. \"16000-16999\"",
                raw.rtp_ports
            ),
        );
    }
    let even = ports.map(|(first, last)| usize::from(last / 2 - first.div_ceil(2) + 1));
    let max_sessions = raw.max_sessions.unwrap_or(even.unwrap_or(100).min(100));
    if let Some(even) = even {
        if max_sessions == 0 || max_sessions > even {
            src.error(
                keys!["media", "max_sessions"],
                format!(
                    "max_sessions must be between 1 and {even}, the even ports of rtp_ports (each session takes one)"
                ),
            );
        }
    }
    let day = Duration::from_secs(86_400);
    let silence = duration(
        &raw.voicemail_silence,
        keys!["media", "voicemail_silence"],
        (Duration::from_secs(1), Duration::from_secs(60)),
        src,
    );
    let max = duration(
        &raw.voicemail_max,
        keys!["media", "voicemail_max"],
        (Duration::from_secs(5), Duration::from_secs(3600)),
        src,
    );
    let retention = duration(
        &raw.retention,
        keys!["media", "retention"],
        (Duration::from_secs(3600), 3650 * day),
        src,
    );
    let public_url = match raw.public_url.as_deref().map(str::trim) {
        None => Some(None),
        Some(url)
            if (url.starts_with("https://") || url.starts_with("http://"))
                && reqwest::Url::parse(url).is_ok_and(|u| u.query().is_none()) =>
        {
            Some(Some(url.trim_end_matches('/').to_owned()))
        }
        Some(url) => {
            src.error(
                keys!["media", "public_url"],
                format!("\"{url}\" is not an http(s) URL without a query; write e.g. \"https://sipdesk.example.com\""),
            );
            None
        }
    };
    let link_lifetime = match &raw.link_lifetime {
        None => retention,
        Some(text) => duration(
            text,
            keys!["media", "link_lifetime"],
            (Duration::from_secs(60), 3650 * day),
            src,
        ),
    };
    let (first, last) = ports?;
    Some(MediaSettings {
        address: address?,
        rtp_ports: first..=last,
        max_sessions,
        voicemail_silence: silence?,
        voicemail_max: max?,
        retention: retention?,
        public_url: public_url?,
        link_lifetime: link_lifetime?,
    })
}

/// The feature codes: digits, `*` and `#`, at most 16, the two different; or "off".
fn build_agent_codes(raw: RawAgents, src: &mut Source<'_>) -> Option<AgentCodes> {
    let mut code = |text: &str, key: &'static str| -> Result<Option<String>, ()> {
        let text = text.trim();
        if text == "off" {
            return Ok(None);
        }
        if text.is_empty()
            || text.len() > 16
            || !text
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        {
            src.error(
                keys!["agents", key],
                format!("\"{text}\" is not a feature code: digits, * and # only, e.g. \"*46\"; or \"off\""),
            );
            return Err(());
        }
        Ok(Some(text.to_owned()))
    };
    let away = code(&raw.away_code, "away_code");
    let available = code(&raw.available_code, "available_code");
    let (Ok(away), Ok(available)) = (away, available) else {
        return None;
    };
    if away.is_some() && away == available {
        src.error(
            keys!["agents", "available_code"],
            "the away and available codes must differ",
        );
        return None;
    }
    Some(AgentCodes { away, available })
}

fn build_defaults(raw: &RawDefaults, src: &mut Source<'_>) -> Option<Defaults> {
    let timezone = zone(&raw.timezone, keys!["defaults", "timezone"], src);
    let region = raw
        .region
        .parse::<Region>()
        .map_err(|e| src.error(keys!["defaults", "region"], e.to_string()))
        .ok();
    Some(Defaults {
        timezone: timezone?,
        timezone_name: raw.timezone.as_str().into(),
        region: region?,
    })
}

fn zone(name: &str, at: &[Seg], src: &mut Source<'_>) -> Option<TimeZone> {
    TimeZone::get(name)
        .map_err(|_| {
            src.error(
                at,
                format!(
                    "unknown time zone \"{name}\"; use an IANA name such as \"Europe/Madrid\" or \"America/Sao_Paulo\""
                ),
            )
        })
        .ok()
}

fn holiday(raw: &RawHoliday, at: &[Seg], src: &mut Source<'_>) -> Option<Holiday> {
    let date = raw
        .date
        .parse::<HolidayDate>()
        .map_err(|e| src.error(&join(at, keys!["date"]), e.to_string()))
        .ok();
    let from = clock_time(raw.from.as_deref(), &join(at, keys!["from"]), src);
    let until = clock_time(raw.until.as_deref(), &join(at, keys!["until"]), src);
    let (date, Ok(from), Ok(until)) = (date?, from, until) else {
        return None;
    };
    Holiday::new(raw.name.as_str().into(), date, from, until)
        .map_err(|e| {
            let key = match e {
                ScheduleError::EmptyHolidayHours { .. } if raw.from.is_some() => "from",
                _ => "until",
            };
            src.error(&join(at, &[Seg::Key(key)]), e.to_string())
        })
        .ok()
}

/// An optional `HH:MM`; `Err` once the error is recorded.
fn clock_time(
    text: Option<&str>,
    at: &[Seg],
    src: &mut Source<'_>,
) -> Result<Option<ClockTime>, ()> {
    match text.map(str::parse::<ClockTime>) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(e)) => {
            src.error(at, e.to_string());
            Err(())
        }
    }
}

pub(super) fn duration(
    text: &str,
    at: &[Seg],
    range: (Duration, Duration),
    src: &mut Source<'_>,
) -> Option<Duration> {
    let (min, max) = range;
    let parsed = humantime::parse_duration(text).ok();
    match parsed {
        Some(d) if d >= min && d <= max => Some(d),
        _ => {
            src.error(
                at,
                format!(
                    "\"{text}\" is not a duration from {} to {}; write e.g. \"15s\", \"2m\" or \"1m 30s\"",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            None
        }
    }
}

fn build_groups(
    raw: &[Option<RawGroup>],
    names: &[Option<String>],
    defaults: Option<&Defaults>,
    global_holidays: &[Holiday],
    src: &mut Source<'_>,
) -> Option<Groups> {
    if names.is_empty() {
        src.error(
            &[],
            "no [[groups]] defined; add at least one group with its queues and agents",
        );
        return None;
    }
    let mut ids: HashMap<&str, GroupId> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        if name.trim().is_empty() {
            src.error(keys!["groups", i, "name"], "a group name cannot be empty");
        } else if ids.contains_key(name.as_str()) {
            src.error(
                keys!["groups", i, "name"],
                format!(
                    "a group named \"{name}\" is already defined above; group names must be unique"
                ),
            );
        } else {
            ids.insert(name, i);
        }
    }
    let mut queues: HashMap<&str, &str> = HashMap::new();
    let mut emails: HashMap<String, (Option<String>, String)> = HashMap::new();
    let mut groups = Vec::new();
    for (i, group) in raw.iter().enumerate() {
        let Some(group) = group else { continue };
        for (j, queue) in group.queues.iter().enumerate() {
            let at = keys!["groups", i, "queues", j];
            if let Err(e) = check_user_part(queue) {
                src.error(at, format!("queue ID: {e}"));
            } else if let Some(other) = queues.insert(queue, &group.name) {
                let message = if other == group.name {
                    format!("queue \"{queue}\" is listed twice in this group")
                } else {
                    format!(
                        "queue \"{queue}\" is already served by group \"{other}\"; a queue belongs to one group"
                    )
                };
                src.error(at, message);
            }
        }
        let resolve = |name: &str| ids.get(name).copied();
        let schedule = schedule(group, i, defaults, global_holidays, src);
        let agents = agents(&group.agents, i, &group.name, &mut emails, src);
        // At most three minutes: past that, a ringing INVITE is cancelled anyway (Timer C).
        let ring_timeout = duration(
            &group.ring_timeout,
            keys!["groups", i, "ring_timeout"],
            (Duration::from_secs(1), Duration::from_secs(180)),
            src,
        );
        let wrap_up = duration(
            &group.wrap_up,
            keys!["groups", i, "wrap_up"],
            (Duration::ZERO, Duration::from_secs(3600)),
            src,
        );
        let max_wait = duration(
            &group.max_wait,
            keys!["groups", i, "max_wait"],
            (Duration::from_secs(1), Duration::from_secs(4 * 3600)),
            src,
        );
        let mut overflow = Vec::new();
        for (k, target) in group.overflow.iter().enumerate() {
            let at = keys!["groups", i, "overflow", k, "group"];
            match resolve(&target.group) {
                None => unknown_group(&target.group, at, &ids, src),
                Some(t) if t == i => src.error(at, "a group cannot overflow to itself"),
                Some(t) if overflow.iter().any(|o: &Overflow| o.target == t) => src.error(
                    at,
                    format!("overflow to \"{}\" is listed twice; list each target once with all its conditions in `when`", target.group),
                ),
                Some(t) => {
                    if target.when.is_empty() {
                        src.error(
                            keys!["groups", i, "overflow", k, "when"],
                            "`when` is empty; list any of \"no_agents\", \"out_of_hours\", \"holiday\", or leave it out for all three",
                        );
                    }
                    overflow.push(Overflow {
                        target: t,
                        when: target.when.clone(),
                    });
                }
            }
        }
        let mut redirect = |name: &Option<String>, key: &'static str| -> Option<GroupId> {
            let name = name.as_deref()?;
            let at = keys!["groups", i, key];
            match resolve(name) {
                None => unknown_group(name, at, &ids, src),
                Some(t) if t == i => src.error(at, "a group cannot redirect callers to itself"),
                Some(t) => return Some(t),
            }
            None
        };
        let unknown_caller_group = redirect(&group.unknown_caller_group, "unknown_caller_group");
        let inactive_caller_group = redirect(&group.inactive_caller_group, "inactive_caller_group");
        if let (Some(schedule), Some(agents), Some(ring_timeout), Some(wrap_up), Some(max_wait)) =
            (schedule, agents, ring_timeout, wrap_up, max_wait)
        {
            groups.push(Group {
                name: group.name.as_str().into(),
                queues: group.queues.clone(),
                schedule,
                agents,
                ring_timeout,
                wrap_up,
                max_wait,
                overflow,
                unknown_caller_group,
                inactive_caller_group,
                final_action: group.final_action,
                closed_action: group.closed_action.unwrap_or(group.final_action),
                allow_transfer: group.allow_transfer,
                greetings: greetings(group, i, src),
                positions: Default::default(),
            });
        }
    }
    // Group ids are positions in the file, so they only hold when every group was built.
    (groups.len() == names.len()).then(|| Groups::new(groups))
}

/// A group's greetings, each file read and converted now; a file that cannot be played is an
/// error at its key (so `check-config` finds it before a caller would).
fn greetings(group: &RawGroup, i: usize, src: &mut Source<'_>) -> Greetings {
    let base = std::path::Path::new(src.origin())
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let own = group.greetings.as_ref();
    let mut load = |path: Option<&String>, at: &[Seg]| -> Option<Arc<Greeting>> {
        match Greeting::load(&base.join(path?)) {
            Ok(greeting) => Some(Arc::new(greeting)),
            Err(error) => {
                src.error(at, error.to_string());
                None
            }
        }
    };
    Greetings {
        default: load(group.greeting.as_ref(), keys!["groups", i, "greeting"]),
        out_of_hours: load(
            own.and_then(|g| g.out_of_hours.as_ref()),
            keys!["groups", i, "greetings", "out_of_hours"],
        ),
        holiday: load(
            own.and_then(|g| g.holiday.as_ref()),
            keys!["groups", i, "greetings", "holiday"],
        ),
        no_agents: load(
            own.and_then(|g| g.no_agents.as_ref()),
            keys!["groups", i, "greetings", "no_agents"],
        ),
    }
}

fn unknown_group(name: &str, at: &[Seg], ids: &HashMap<&str, GroupId>, src: &mut Source<'_>) {
    let mut known: Vec<&str> = ids.keys().copied().collect();
    known.sort_unstable();
    src.error(
        at,
        format!(
            "no group is named \"{name}\"; the groups are: {}",
            known.join(", ")
        ),
    );
}

fn schedule(
    group: &RawGroup,
    i: usize,
    defaults: Option<&Defaults>,
    global_holidays: &[Holiday],
    src: &mut Source<'_>,
) -> Option<Schedule> {
    // Without usable [defaults] (already reported) a group that relies on them has no zone.
    let (timezone, timezone_name) = match (&group.timezone, defaults) {
        (Some(name), _) => (
            zone(name, keys!["groups", i, "timezone"], src),
            name.as_str().into(),
        ),
        (None, Some(d)) => (Some(d.timezone.clone()), d.timezone_name.clone()),
        (None, None) => (None, "".into()),
    };
    let hours = match &group.hours {
        Some(raw) => Some(hours(raw, i, src)?),
        None => None,
    };
    let mut holidays = match group.holidays {
        HolidayMode::Global => global_holidays.to_vec(),
        HolidayMode::Own => Vec::new(),
    };
    let own = group.own_holidays.iter().enumerate();
    let own: Vec<Option<Holiday>> = own
        .map(|(k, h)| holiday(h, keys!["groups", i, "own_holidays", k], src))
        .collect();
    let own: Option<Vec<Holiday>> = own.into_iter().collect();
    holidays.extend(own?);
    Some(Schedule {
        timezone: timezone?,
        timezone_name,
        hours,
        holidays,
    })
}

fn hours(raw: &RawHours, i: usize, src: &mut Source<'_>) -> Option<WeeklyHours> {
    let days_keys = raw.days();
    let mut days: [Vec<Interval>; 7] = Default::default();
    // For each parsed interval, its position in the file's list (malformed ones are left out).
    let mut positions: [Vec<usize>; 7] = Default::default();
    let mut malformed = false;
    for (d, (key, texts)) in days_keys.into_iter().enumerate() {
        for (k, text) in texts.iter().enumerate() {
            match text.parse::<Interval>() {
                Ok(interval) => {
                    days[d].push(interval);
                    positions[d].push(k);
                }
                Err(e) => {
                    src.error(keys!["groups", i, "hours", key, k], e.to_string());
                    malformed = true;
                }
            }
        }
    }
    let checked = WeeklyHours::new(days.clone()).map_err(|overlaps| {
        for overlap in overlaps {
            let describe = |r: IntervalRef| {
                let d = r.day.to_monday_zero_offset() as usize;
                (days_keys[d].0, days[d][r.index], positions[d][r.index])
            };
            let (key, interval, k) = describe(overlap.interval);
            let (other_key, other, _) = describe(overlap.with);
            src.error(
                keys!["groups", i, "hours", key, k],
                format!(
                    "\"{interval}\" ({key}) overlaps \"{other}\" ({other_key}); intervals of a week must not share any time"
                ),
            );
        }
    });
    checked.ok().filter(|_| !malformed)
}

fn agents(
    raw: &[RawAgent],
    i: usize,
    group: &str,
    emails: &mut HashMap<String, (Option<String>, String)>,
    src: &mut Source<'_>,
) -> Option<Vec<Agent>> {
    if raw.is_empty() {
        src.error(
            keys!["groups", i, "agents"],
            format!("group \"{group}\" has no agents; add at least one, e.g. {{ extension = \"2001\", email = \"ana@example.com\" }}"),
        );
        return None;
    }
    let mut agents: Vec<Agent> = Vec::new();
    let mut ok = true;
    for (k, agent) in raw.iter().enumerate() {
        let at = keys!["groups", i, "agents", k, "extension"];
        let extension = match Extension::parse(&agent.extension) {
            Ok(e) => e,
            Err(e) => {
                src.error(at, format!("extension: {e}"));
                ok = false;
                continue;
            }
        };
        if agents.iter().any(|a| a.extension == extension) {
            src.error(
                at,
                format!("extension {extension} is listed twice in this group"),
            );
            ok = false;
            continue;
        }
        if let Some(email) = &agent.email {
            if !looks_like_email(email) {
                src.error(
                    keys!["groups", i, "agents", k, "email"],
                    format!("\"{email}\" is not an e-mail address; write e.g. \"ana@example.com\""),
                );
                ok = false;
            }
        }
        let seen = emails.entry(extension.as_str().to_owned());
        match seen {
            std::collections::hash_map::Entry::Occupied(first) => {
                let (first_email, first_group) = first.get();
                if agent.email.is_some() && first_email.is_some() && first_email != &agent.email {
                    src.error(
                        keys!["groups", i, "agents", k, "email"],
                        format!(
                            "extension {extension} has e-mail {} in group \"{first_group}\"; one extension is one agent, give it the same e-mail everywhere",
                            first_email.as_deref().unwrap_or_default()
                        ),
                    );
                    ok = false;
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((agent.email.clone(), group.to_owned()));
            }
        }
        agents.push(Agent {
            extension,
            email: agent.email.clone(),
            name: agent.name.clone(),
        });
    }
    ok.then_some(agents)
}

pub(super) fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}
