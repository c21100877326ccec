//! The commands that read or change the store, or ask the running daemon through its admin API,
//! one module each; `run` and `check-config` live in `main.rs`.

pub(crate) mod agents;
pub(crate) mod calls;
pub(crate) mod deliveries;
pub(crate) mod groups;
pub(crate) mod route;

use sipdesk::config::Config;

/// Whether the daemon runs: something answers on the admin API's address. Live state (agents,
/// calls in progress, groups now) is asked of it then; without it, the store is read.
pub(crate) async fn daemon_runs(config: &Config) -> bool {
    match config.admin.listen {
        Some(addr) => tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|c| c.is_ok()),
        None => false,
    }
}

/// A GET to the running daemon's admin API, parsed as JSON; fails on any status but 200.
pub(crate) async fn admin_json(config: &Config, path: &str) -> anyhow::Result<serde_json::Value> {
    match admin(config, reqwest::Method::GET, path).await? {
        (200, body) => Ok(serde_json::from_str(&body)?),
        (status, body) => anyhow::bail!("sipdesk answered {status}: {body}"),
    }
}

/// A request to the running daemon's admin API, with its token; returns the status and body.
pub(crate) async fn admin(
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    admin_with(config, method, path, None).await
}

/// A request with a JSON body.
pub(crate) async fn admin_with(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let Some(addr) = config.admin.listen else {
        anyhow::bail!(
            "the admin API is off ([admin] listen = \"off\"); this needs the running daemon's"
        );
    };
    let token = config
        .admin
        .token
        .source()
        .read()
        .map_err(|why| anyhow::anyhow!("{why}; run this as root or as the sipdesk user"))?;
    sipdesk::helpdesk::http::install_crypto();
    let mut request = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token.expose());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach sipdesk at {addr} (is it running?): {e}"))?;
    let status = response.status().as_u16();
    if status == 401 {
        anyhow::bail!("sipdesk refused the admin token (is [admin] token_file the daemon's?)");
    }
    Ok((status, response.text().await.unwrap_or_default()))
}

/// Text as one URL path segment.
pub(crate) fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
