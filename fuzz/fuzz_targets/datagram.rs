//! Arbitrary bytes through the entry point the UDP socket uses: `Core::on_datagram`, with a
//! trusted source, so they reach the wire layer, the transactions and the proxy. Nothing may
//! panic. Run: `cargo fuzz run datagram -s none`.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sipdesk::config::Config;
use sipdesk::proxy::{Core, Local, Now, ProxySettings};
use sipdesk::sip::policy::SharedPolicy;

const CONFIG: &str = r#"
[sip]
pbx = "127.0.0.1:5080"
trusted = ["127.0.0.0/8"]
[defaults]
timezone = "Europe/Madrid"
region = "ES"
[[groups]]
name = "support"
queues = ["100", "user"]
agents = [{ extension = "2001" }, { extension = "2002" }]
"#;

fn config() -> Arc<Config> {
    static CONFIG_ONCE: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| Arc::new(Config::from_toml(CONFIG, "fuzz.toml").expect("valid"))).clone()
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let local = Local { host: "127.0.0.1".into(), port: 5060 };
    let settings = ProxySettings::new(&config, local, vec!["127.0.0.1:5060".parse().unwrap()], "127.0.0.1:5080".parse().unwrap());
    let policy = SharedPolicy::new(config.sip.policy("127.0.0.1".parse().unwrap()));
    let mut core = Core::new(settings, config, policy, Default::default(), &[]);
    let now = Now::system();
    // The same bytes from the caller's side and from the PBX (agents' side), then time passing.
    core.on_datagram(now, data, "127.0.0.1:5070".parse().unwrap());
    core.on_datagram(now, data, "127.0.0.1:5080".parse().unwrap());
    core.poll(now.plus(std::time::Duration::from_secs(40)));
    for _ in core.outputs() {}
});
