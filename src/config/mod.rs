//! The configuration admins edit, `/etc/sipdesk/sipdesk.toml`.
//!
//! Loading has three stages, so that one run reports every problem with its place in the file:
//! the TOML is parsed into a document that keeps spans; each section (and each `[[groups]]` /
//! `[[holidays]]` entry on its own) is deserialized into the raw model of [`raw`], with
//! `deny_unknown_fields` everywhere; then [`build`] checks values and references and produces the
//! settings the rest of sipdesk reads. Errors are `file:line:col: what is wrong; what to write`.

mod build;
pub(crate) use build::host_name;
pub(crate) mod diagnostic;
mod helpdesk;
mod raw;
mod sms;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::Duration;

use ipnet::IpNet;
use jiff::tz::TimeZone;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use diagnostic::Diagnostic;
use diagnostic::Source;
pub use helpdesk::{
    Duplicates, HelpScoutSettings, HelpScoutStatus, HelpdeskSettings, IntercomSettings, Kind,
    KlaviyoSettings, Secret, SecretSource, Vendor, WebhookSettings, ZendeskAuth, ZendeskSettings,
};
use raw::{
    RawAdmin, RawAgents, RawCluster, RawDatabase, RawDefaults, RawGroup, RawHelpdesk, RawHoliday,
    RawMedia, RawSip,
};

pub use sms::{SmsNumber, SmsSettings};

use crate::phone::Region;
use crate::routing::Groups;
pub use crate::sip::peer::Transport;
use crate::sip::policy::Policy;
use crate::sip::transaction::TimerSettings;
use crate::sip::wire::Limits;

/// Where the configuration is read from when neither `--config` nor `SIPDESK_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/sipdesk/sipdesk.toml";

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub sip: SipSettings,
    pub database: DatabaseSettings,
    pub admin: AdminSettings,
    pub agents: AgentCodes,
    pub media: MediaSettings,
    pub cluster: ClusterSettings,
    pub defaults: Defaults,
    /// How many global holidays are defined (each group holds its own copy).
    pub global_holidays: usize,
    pub groups: Groups,
    /// The helpdesk integrations calls are reported to.
    pub helpdesks: Vec<HelpdeskSettings>,
    /// The numbers that take texts, and the rules texts follow.
    pub sms: SmsSettings,
}

/// `[sip]`, checked.
#[derive(Clone, Debug)]
pub struct SipSettings {
    pub listen: Vec<Listen>,
    pub pbx: HostPort,
    pub pbx_transport: Transport,
    pub advertise: Option<HostPort>,
    /// Empty: only the PBX's own address.
    pub trusted: Vec<IpNet>,
    /// Answer untrusted requests with 403 (`true`) or ignore them.
    pub reject_untrusted: bool,
    pub untrusted_rate: u32,
    pub limits: Limits,
    pub max_transactions: usize,
    pub max_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub tcp_message_timeout: Duration,
    pub timers: TimerSettings,
    pub max_call_duration: Duration,
    /// `None`: off.
    pub session_check: Option<Duration>,
    pub max_outbound_per_agent: u32,
    pub shutdown_grace: Duration,
    pub recording_url: Option<String>,
    pub recording_header: Option<String>,
    /// The INVITE header carrying call tags; `None`: off.
    pub tags_header: Option<String>,
}

impl SipSettings {
    /// What the sockets and the proxy accept, with the PBX at `pbx`.
    pub fn policy(&self, pbx: std::net::IpAddr) -> Policy {
        Policy {
            pbx,
            trusted: self.trusted.clone(),
            reject_untrusted: self.reject_untrusted,
            untrusted_rate: self.untrusted_rate,
            limits: self.limits,
            max_transactions: self.max_transactions,
            max_connections: self.max_connections,
            tcp_idle_timeout: self.tcp_idle_timeout,
            tcp_message_timeout: self.tcp_message_timeout,
        }
    }
}

/// A socket to listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A host name or address with a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `[database]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// The database, with a relative SQLite path resolved under `state_directory`.
    pub url: String,
    pub state_directory: PathBuf,
    pub queue_limit: usize,
    pub stop_write_timeout: Duration,
}

impl DatabaseSettings {
    /// The SQLite file, when the database is one.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match DatabaseUrl::parse(&self.url)? {
            DatabaseUrl::Sqlite { path, .. } => Some(path),
            DatabaseUrl::Postgres(_) => None,
        }
    }
}

/// A database URL as sipdesk reads it. SQLite paths are taken relative to the state
/// directory, never to the working directory: the daemon (run by systemd in
/// `/var/lib/sipdesk`) and an admin's `sipdesk calls` from their home directory must open the
/// same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` or `sqlite:PATH`, with `?options` kept apart.
    Sqlite {
        path: PathBuf,
        options: String,
    },
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Option<DatabaseUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Some(DatabaseUrl::Postgres(url.to_owned()));
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let (path, options) = match rest.split_once('?') {
            Some((path, options)) => (path, format!("?{options}")),
            None => (rest, String::new()),
        };
        (!path.is_empty()).then(|| DatabaseUrl::Sqlite {
            path: PathBuf::from(path),
            options,
        })
    }

    /// The URL with a relative SQLite path made absolute under `base`.
    pub fn resolve(self, base: &Path) -> String {
        match self {
            DatabaseUrl::Postgres(url) => url,
            DatabaseUrl::Sqlite { path, options } if path.as_os_str() == ":memory:" => {
                format!("sqlite::memory:{options}")
            }
            DatabaseUrl::Sqlite { path, options } => {
                format!("sqlite://{}{options}", base.join(path).display())
            }
        }
    }
}

/// `[admin]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: the API is off.
    pub listen: Option<SocketAddr>,
    pub token: AdminToken,
    /// An answered call counts for the service level when answered within this wait.
    pub service_level: Duration,
}

/// `[media]`, checked: where sipdesk's own voice (voicemail) sends and receives RTP, how long
/// a voicemail may last, how long recordings are kept and how helpdesks that cannot take a file
/// reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// The IP RTP is bound to and named in SDP; `None`: sipdesk's own SIP address.
    pub address: Option<IpAddr>,
    /// RTP ports (even ones are used).
    pub rtp_ports: std::ops::RangeInclusive<u16>,
    /// Voicemail sessions at once; beyond, a call takes the `reject` path.
    pub max_sessions: usize,
    /// Silence (or no RTP at all) that ends a recording.
    pub voicemail_silence: Duration,
    /// The longest recording.
    pub voicemail_max: Duration,
    /// Recordings older than this whose deliveries are done are removed.
    pub retention: Duration,
    /// The base URL helpdesk users reach sipdesk's admin HTTP server at (behind a reverse
    /// proxy), for signed links to recordings; `None`: no links.
    pub public_url: Option<String>,
    /// How long a signed link works.
    pub link_lifetime: Duration,
}

/// `[cluster]`, checked: who this instance is among those sharing one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This instance's name: the calls it owns carry it.
    pub instance: String,
    /// An instance silent this long is taken for dead: another closes its calls.
    pub dead_after: Duration,
}

/// `[agents]`, checked: the feature codes agents dial to change their own availability (the
/// PBX routes them to sipdesk; `None`: off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentCodes {
    pub away: Option<String>,
    pub available: Option<String>,
}

/// Where the admin API's token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminToken {
    /// `token_file` or `token_env`.
    Configured(SecretSource),
    /// Made by the daemon at each start, in this file (`admin.token` in the state directory).
    Generated(PathBuf),
}

impl AdminToken {
    /// The token the daemon and the commands use.
    pub fn source(&self) -> SecretSource {
        match self {
            AdminToken::Configured(source) => source.clone(),
            AdminToken::Generated(path) => SecretSource::File(path.clone()),
        }
    }
}

/// `[defaults]`, checked.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub timezone: TimeZone,
    pub timezone_name: std::sync::Arc<str>,
    pub region: Region,
}

/// What a reload changes: keys that take effect now, and keys that need a restart (their
/// running values stay in force until then).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub applied: Vec<&'static str>,
    pub need_restart: Vec<&'static str>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        Config::from_toml(&text, &origin)
    }

    /// Checks a configuration text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let (root, syntax_errors) = DeTable::parse_recoverable(text);
        let mut src = Source::new(origin, text, &root);
        if !syntax_errors.is_empty() {
            for error in &syntax_errors {
                src.toml_error(error);
            }
            return Err(ConfigError::Invalid(src.into_diagnostics()));
        }
        let raw = RawConfig::read(&root, &mut src);
        match build::build(raw, &mut src) {
            Some(config) if !src.has_errors() => Ok(config),
            _ => Err(ConfigError::Invalid(src.into_diagnostics())),
        }
    }

    /// This configuration, read again while `running` is in force: the keys that only a restart
    /// can change (sockets, the PBX's address, the database) keep their running values, so the
    /// configuration in force is always the one the daemon works with. Returns what changed.
    pub fn reloaded_over(&mut self, running: &Config) -> Reloaded {
        let mut changes = Reloaded::default();
        let (new, old) = (&mut self.sip, &running.sip);
        macro_rules! restart_only {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if new.$field != old.$field {
                    changes.need_restart.push($key);
                    new.$field = old.$field.clone();
                }
            )*};
        }
        macro_rules! applied {
            ($($field:ident => $key:literal),* $(,)?) => {$(
                if new.$field != old.$field {
                    changes.applied.push($key);
                }
            )*};
        }
        restart_only!(
            listen => "sip.listen",
            pbx => "sip.pbx",
            pbx_transport => "sip.pbx_transport",
            advertise => "sip.advertise",
        );
        applied!(
            trusted => "sip.trusted",
            reject_untrusted => "sip.untrusted",
            untrusted_rate => "sip.untrusted_rate",
            limits => "sip.max_message_size/max_headers",
            max_transactions => "sip.max_transactions",
            max_connections => "sip.max_connections",
            tcp_idle_timeout => "sip.tcp_idle_timeout",
            tcp_message_timeout => "sip.tcp_message_timeout",
            timers => "sip.t1/t2/t4",
            max_call_duration => "sip.max_call_duration",
            session_check => "sip.session_check",
            max_outbound_per_agent => "sip.max_outbound_per_agent",
            shutdown_grace => "sip.shutdown_grace",
            recording_url => "sip.recording_url",
            recording_header => "sip.recording_header",
            tags_header => "sip.tags_header",
        );
        if self.database != running.database {
            changes.need_restart.push("database");
            self.database = running.database.clone();
        }
        // The admin API's address and token need a restart; the service level is read at each
        // request.
        let service_level = self.admin.service_level;
        if self.admin.service_level != running.admin.service_level {
            changes.applied.push("admin.service_level");
        }
        let mut admin = self.admin.clone();
        admin.service_level = running.admin.service_level;
        if admin != running.admin {
            changes.need_restart.push("admin");
            self.admin = running.admin.clone();
            self.admin.service_level = service_level;
        }
        if self.agents != running.agents {
            changes.applied.push("agents");
        }
        // Where voicemail's RTP runs is set at start (the ports are leased from it); the
        // recording's limits, retention and links apply at once.
        let media = (&self.media, &running.media);
        if (media.0.address, &media.0.rtp_ports, media.0.max_sessions)
            != (media.1.address, &media.1.rtp_ports, media.1.max_sessions)
        {
            changes
                .need_restart
                .push("media.address/rtp_ports/max_sessions");
            self.media.address = running.media.address;
            self.media.rtp_ports = running.media.rtp_ports.clone();
            self.media.max_sessions = running.media.max_sessions;
        }
        if self.media != running.media {
            changes.applied.push("media");
        }
        // The instance's name is who owns its calls: it changes with a restart only.
        if self.cluster.instance != running.cluster.instance {
            changes.need_restart.push("cluster.instance");
            self.cluster.instance = running.cluster.instance.clone();
        }
        if self.cluster.dead_after != running.cluster.dead_after {
            changes.applied.push("cluster.dead_after");
        }
        let differ = |a: &dyn fmt::Debug, b: &dyn fmt::Debug| format!("{a:?}") != format!("{b:?}");
        if differ(&self.defaults, &running.defaults) {
            changes.applied.push("defaults");
        }
        if differ(&self.groups, &running.groups) || self.global_holidays != running.global_holidays
        {
            changes.applied.push("groups and holidays");
        }
        if differ(&self.helpdesks, &running.helpdesks) {
            changes.applied.push("helpdesks");
        }
        changes
    }

    /// One line saying what the configuration holds.
    pub fn summary(&self) -> String {
        let queues: usize = self.groups.iter().map(|g| g.queues.len()).sum();
        let mut extensions: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| g.agents.iter().map(|a| a.extension.as_str()))
            .collect();
        extensions.sort_unstable();
        extensions.dedup();
        format!(
            "{} groups, {} queues, {} agents, {} global holidays, {} helpdesks, PBX {}",
            self.groups.len(),
            queues,
            extensions.len(),
            self.global_holidays,
            self.helpdesks.len(),
            self.sip.pbx
        )
    }
}

/// The sections of the file, each read on its own so that one bad entry does not hide the
/// errors of the others. `None` or a missing entry: that part had errors, already recorded.
pub(crate) struct RawConfig {
    sip: Option<RawSip>,
    database: Option<RawDatabase>,
    admin: Option<RawAdmin>,
    agents: Option<RawAgents>,
    media: Option<RawMedia>,
    cluster: Option<RawCluster>,
    defaults: Option<RawDefaults>,
    holidays: Vec<RawHoliday>,
    groups: Vec<Option<RawGroup>>,
    /// The name of each `[[groups]]` entry, also for entries that failed to deserialize, so
    /// references to them are not reported as unknown groups.
    group_names: Vec<Option<String>>,
    helpdesks: Vec<Option<RawHelpdesk>>,
    sms_numbers: Vec<Option<sms::RawSmsNumber>>,
    sms: Option<sms::RawSms>,
}

/// The top-level keys, in the order the example file uses.
const SECTIONS: [&str; 12] = [
    "sip",
    "database",
    "admin",
    "agents",
    "media",
    "cluster",
    "defaults",
    "holidays",
    "groups",
    "helpdesks",
    "sms_numbers",
    "sms",
];

impl RawConfig {
    fn read(root: &Spanned<DeTable<'_>>, src: &mut Source<'_>) -> RawConfig {
        let mut raw = RawConfig {
            sip: None,
            database: None,
            admin: None,
            agents: None,
            media: None,
            cluster: None,
            defaults: None,
            holidays: Vec::new(),
            groups: Vec::new(),
            group_names: Vec::new(),
            helpdesks: Vec::new(),
            sms_numbers: Vec::new(),
            sms: None,
        };
        for (key, value) in root.get_ref().iter() {
            match key.get_ref().as_ref() {
                "sip" => raw.sip = section(value, src),
                "database" => raw.database = section(value, src),
                "admin" => raw.admin = section(value, src),
                "agents" => raw.agents = section(value, src),
                "media" => raw.media = section(value, src),
                "cluster" => raw.cluster = section(value, src),
                "defaults" => raw.defaults = section(value, src),
                "holidays" => {
                    raw.holidays = entries(value, "holidays", src)
                        .into_iter()
                        .flatten()
                        .collect();
                }
                "groups" => {
                    raw.groups = entries(value, "groups", src);
                    raw.group_names = match value.get_ref() {
                        DeValue::Array(items) => items.iter().map(name_of).collect(),
                        _ => Vec::new(),
                    };
                }
                "helpdesks" => raw.helpdesks = entries(value, "helpdesks", src),
                "sms_numbers" => raw.sms_numbers = entries(value, "sms_numbers", src),
                "sms" => raw.sms = section(value, src),
                other => src.error_at(
                    key.span(),
                    format!(
                        "unknown section `{other}`; the sections are: {}",
                        SECTIONS.join(", ")
                    ),
                ),
            }
        }
        for (missing, hint) in [
            (raw.sip.is_none(), ("sip", "[sip] with pbx = \"HOST:PORT\"")),
            (
                raw.defaults.is_none(),
                ("defaults", "[defaults] with timezone and region"),
            ),
        ] {
            let (name, example) = hint;
            if missing && root.get_ref().get(name).is_none() {
                src.error(&[], format!("missing section [{name}]; add {example}"));
            }
        }
        raw
    }
}

/// Deserializes one section, recording its errors. serde stops at the first unknown key, which
/// would hide the section's other keys from the checks: each unknown key is recorded, left out,
/// and the section read again, so one run reports misspelt keys and wrong values together.
fn section<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>, src: &mut Source<'_>) -> Option<T> {
    let mut value = value.clone();
    loop {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(section) => return Some(section),
            Err(error) => {
                src.toml_error(&error);
                let left_out = diagnostic::is_unknown_key(&error)
                    && error
                        .span()
                        .is_some_and(|key| remove_key(value.get_mut(), &key));
                if !left_out {
                    return None;
                }
            }
        }
    }
}

/// Removes the key written at `span` from a table at any depth; whether it was found.
fn remove_key(value: &mut DeValue<'_>, span: &std::ops::Range<usize>) -> bool {
    match value {
        DeValue::Table(table) => {
            let found = table
                .iter()
                .find(|(key, _)| key.span() == *span)
                .map(|(key, _)| key.get_ref().to_string());
            match found {
                Some(key) => table.remove(key.as_str()).is_some(),
                None => table
                    .iter_mut()
                    .any(|(_, item)| remove_key(item.get_mut(), span)),
            }
        }
        DeValue::Array(items) => items
            .iter_mut()
            .any(|item| remove_key(item.get_mut(), span)),
        _ => false,
    }
}

/// Deserializes each entry of an array of tables on its own.
fn entries<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    name: &str,
    src: &mut Source<'_>,
) -> Vec<Option<T>> {
    match value.get_ref() {
        DeValue::Array(items) => items.iter().map(|item| section(item, src)).collect(),
        _ => {
            src.error_at(
                value.span(),
                format!("`{name}` must be a list of tables; write each entry under [[{name}]]"),
            );
            Vec::new()
        }
    }
}

fn name_of(item: &Spanned<DeValue<'_>>) -> Option<String> {
    let name = item.get_ref().as_table()?.get("name")?;
    name.get_ref().as_str().map(str::to_owned)
}
