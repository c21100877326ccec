//! Running the real `sipdesk run` and SIPp on loopback for the black-box tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A port free for both UDP and TCP on 127.0.0.1, never handed out before in this process:
/// tests run in parallel, and a port released here may be taken by another test's SIPp before
/// the daemon it was meant for binds it (calls then reach the wrong daemon).
pub(crate) fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A fresh directory for one test.
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sipdesk-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scenario of `tests/sipp` by name, or a scenario file by absolute path.
pub(crate) fn scenario(name: &str) -> String {
    if name.starts_with('/') {
        return name.to_owned();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// A running sipdesk.
pub(crate) struct Daemon {
    child: Option<Child>,
    pub(crate) port: u16,
    pub(crate) pbx_port: u16,
    /// The admin API's port on 127.0.0.1.
    pub(crate) admin_port: u16,
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// The open-file limit it runs under (as systemd's `LimitNOFILE=` would set it).
    nofile: Option<u64>,
    /// More environment (as systemd would set: NOTIFY_SOCKET, WATCHDOG_USEC).
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts sipdesk listening on UDP and TCP at 127.0.0.1:<port>, with the PBX at
    /// 127.0.0.1:<pbx_port>, `sip_extra` added to `[sip]` and `body` (defaults and groups)
    /// after it. Returns once it says it is ready.
    pub(crate) fn start(name: &str, sip_extra: &str, body: &str) -> Daemon {
        Daemon::start_with_database(name, sip_extra, body, None)
    }

    /// Like [`Daemon::start`], with files (helpdesk tokens) written in its directory, which is
    /// also its working directory.
    pub(crate) fn start_with_files(
        name: &str,
        sip_extra: &str,
        body: &str,
        files: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_in(test_dir(name), sip_extra, body, None, files)
    }

    pub(crate) fn start_with_database(
        name: &str,
        sip_extra: &str,
        body: &str,
        database: Option<&str>,
    ) -> Daemon {
        Daemon::start_in(test_dir(name), sip_extra, body, database, &[])
    }

    pub(crate) fn start_in(
        dir: PathBuf,
        sip_extra: &str,
        body: &str,
        database: Option<&str>,
        files: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_limited(dir, sip_extra, body, database, files, None)
    }

    /// Like [`Daemon::start_in`], with the PBX (the agents' phones) at `pbx_port`, shared with
    /// other instances, and `files` in its directory.
    pub(crate) fn start_with_pbx(
        dir: PathBuf,
        sip_extra: &str,
        body: &str,
        database: &str,
        pbx_port: u16,
        files: &[(&str, &str)],
    ) -> Daemon {
        let mut daemon = Daemon::configure(dir, sip_extra, body, Some(database), files, None);
        let text = std::fs::read_to_string(&daemon.config).unwrap().replace(
            &format!("pbx = \"127.0.0.1:{}\"", daemon.pbx_port),
            &format!("pbx = \"127.0.0.1:{pbx_port}\""),
        );
        std::fs::write(&daemon.config, text).unwrap();
        daemon.pbx_port = pbx_port;
        daemon.spawn();
        daemon
    }

    /// Like [`Daemon::start_in`], under an open-file limit of `nofile`.
    pub(crate) fn start_limited(
        dir: PathBuf,
        sip_extra: &str,
        body: &str,
        database: Option<&str>,
        files: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Daemon {
        let mut daemon = Daemon::configure(dir, sip_extra, body, database, files, nofile);
        daemon.spawn();
        daemon
    }

    /// Like [`Daemon::start`] with more environment variables, configured but not started:
    /// [`Daemon::launch`] starts it (its ports are known before).
    pub(crate) fn prepare_with_env(
        name: &str,
        sip_extra: &str,
        body: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut daemon = Daemon::configure(test_dir(name), sip_extra, body, None, &[], None);
        daemon.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        daemon
    }

    /// Starts a prepared daemon; returns once it says it is ready.
    pub(crate) fn launch(&mut self) {
        self.spawn();
    }

    /// Writes the configuration; does not start it.
    fn configure(
        dir: PathBuf,
        sip_extra: &str,
        body: &str,
        database: Option<&str>,
        files: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Daemon {
        for (file, contents) in files {
            std::fs::write(dir.join(file), contents).unwrap();
        }
        let port = free_port();
        let pbx_port = free_port();
        let admin_port = free_port();
        let database = database.map_or_else(
            || format!("sqlite://{}/sipdesk.db", dir.display()),
            str::to_owned,
        );
        let text = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{port}\", \"tcp:127.0.0.1:{port}\"]\npbx = \"127.0.0.1:{pbx_port}\"\n{sip_extra}\n\n[database]\nstate_directory = \"{}\"\nurl = \"{database}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{body}",
            dir.display()
        );
        let config = dir.join("sipdesk.toml");
        std::fs::write(&config, text).unwrap();
        Daemon {
            child: None,
            port,
            pbx_port,
            admin_port,
            dir,
            config,
            log: Arc::new(Mutex::new(Vec::new())),
            nofile,
            env: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        let mut command = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_sipdesk"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sipdesk")),
        };
        let mut child = command
            .args(["run", "--config", self.config.to_str().unwrap()])
            .current_dir(&self.dir)
            .env("SIPDESK_LOG", "info,sipdesk=debug")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sipdesk starts");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sipdesk ready") {
                    let _ = ready_tx.send(());
                }
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            panic!("sipdesk did not become ready:\n{}", self.log());
        }
    }

    /// `sipdesk deliveries --json`: every delivery, newest call first.
    pub(crate) fn deliveries(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
            .args([
                "deliveries",
                "--json",
                "--limit",
                "100000",
                "--config",
                self.config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sipdesk deliveries: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `sipdesk --config <this daemon's> <args>`; returns the exit code and stdout+stderr.
    pub(crate) fn command(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
            .args(["--config", self.config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits until `n` deliveries exist and none is pending or in progress (or `wait` passes),
    /// and returns them all.
    pub(crate) fn settled_deliveries(&self, n: usize, wait: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + wait;
        loop {
            let all = self.deliveries();
            let open = all
                .iter()
                .filter(|d| d["state"] == "pending" || d["state"] == "in_progress")
                .count();
            if (all.len() >= n && open == 0) || Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A plain HTTP/1.1 request to its admin API; returns the status and the body.
    pub(crate) fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        self.admin_body(method, path, token, None)
    }

    /// The token the daemon made at start.
    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token")).unwrap()
    }

    /// A request with the daemon's token and a JSON body; the answer parsed as JSON (`null`
    /// when it is not JSON).
    pub(crate) fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.admin_body(method, path, Some(&self.token()), body);
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// A plain HTTP/1.1 request with an optional JSON body.
    pub(crate) fn admin_body(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let content = body.map_or(String::new(), |b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        });
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{content}Connection: close\r\n\r\n{}",
            body.unwrap_or_default()
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    /// Everything sipdesk logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `sipdesk calls --json`.
    pub(crate) fn calls(&self) -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
            .args([
                "calls",
                "--json",
                "--limit",
                "1000",
                "--config",
                self.config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sipdesk calls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until `n` calls have ended and returns every call.
    pub(crate) fn ended_calls(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let calls = self.calls();
            let ended = calls.iter().filter(|c| !c["outcome"].is_null()).count();
            if ended >= n || Instant::now() > deadline {
                assert_eq!(ended, n, "ended calls: {calls:#?}\nlog:\n{}", self.log());
                return calls;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM; returns its exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sipdesk did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it with SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same configuration.
    pub(crate) fn restart(&mut self) {
        self.spawn();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A SIPp run.
pub(crate) struct Sipp {
    child: Child,
    name: String,
    dir: PathBuf,
}

/// Options of one SIPp run.
pub(crate) struct SippRun<'a> {
    pub(crate) scenario: &'a str,
    /// The local address and port.
    pub(crate) ip: &'a str,
    pub(crate) port: u16,
    /// `Some(address)` for a UAC, `None` for a UAS.
    pub(crate) target: Option<String>,
    pub(crate) service: &'a str,
    pub(crate) calls: u32,
    pub(crate) rate: u32,
    pub(crate) tcp: bool,
}

/// More options of a SIPp run.
#[derive(Default)]
pub(crate) struct SippMore {
    /// An injection file (`-inf`): the scenario's `[field0]`… per call.
    pub(crate) inf: Option<PathBuf>,
    /// Most calls at once (`-l`); default 1.
    pub(crate) limit: Option<u32>,
    /// How long an answered call lasts, in ms (`-d`, the caller scenarios' `<pause/>`);
    /// default 300.
    pub(crate) duration_ms: Option<u32>,
    /// SIPp's RTP port (`-mp`, where `play_pcap_audio` sends from); its default, 6000, would
    /// be shared by tests running at once.
    pub(crate) media_port: Option<u16>,
}

impl SippRun<'_> {
    pub(crate) fn spawn(&self, dir: &Path) -> Sipp {
        self.spawn_with(dir, &SippMore::default())
    }

    pub(crate) fn spawn_with(&self, dir: &Path, more: &SippMore) -> Sipp {
        let base = Path::new(self.scenario)
            .file_name()
            .map_or(self.scenario.to_owned(), |f| {
                f.to_string_lossy().into_owned()
            });
        let name = format!("{}-{}", base.trim_end_matches(".xml"), self.port);
        let mut args: Vec<String> = vec![
            "-sf".into(),
            scenario(self.scenario),
            "-i".into(),
            self.ip.into(),
            "-p".into(),
            self.port.to_string(),
            "-m".into(),
            self.calls.to_string(),
            "-nostdin".into(),
            "-trace_err".into(),
            "-error_file".into(),
            dir.join(format!("{name}.errors.log")).display().to_string(),
            "-timeout".into(),
            "40s".into(),
            "-timeout_error".into(),
            "-max_recv_loops".into(),
            "1000".into(),
            "-deadcall_wait".into(),
            "0".into(),
        ];
        if self.tcp {
            args.extend(["-t".into(), "t1".into()]);
        }
        if let Some(inf) = &more.inf {
            args.extend(["-inf".into(), inf.display().to_string()]);
        }
        if let Some(port) = more.media_port {
            args.extend(["-mp".into(), port.to_string()]);
        }
        if let Some(target) = &self.target {
            args.extend([
                "-s".into(),
                self.service.into(),
                "-r".into(),
                self.rate.to_string(),
                "-l".into(),
                more.limit.unwrap_or(1).to_string(),
                // How long an answered call lasts (the caller scenarios' <pause/>).
                "-d".into(),
                more.duration_ms.unwrap_or(300).to_string(),
            ]);
            args.push(target.clone());
        }
        let child = Command::new("sipp")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sipp is installed (Debian package sip-tester)");
        Sipp {
            child,
            name,
            dir: dir.to_owned(),
        }
    }
}

impl Sipp {
    /// Waits for SIPp to finish; returns its exit code (0: every call succeeded) and its errors.
    pub(crate) fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        let errors = std::fs::read_to_string(self.dir.join(format!("{}.errors.log", self.name)))
            .unwrap_or_default();
        (status.code().unwrap_or(-1), format!("{stderr}{errors}"))
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// SIPp as the agents' phones at the PBX address, playing `scenario` for `calls` calls;
    /// started a moment before the callers.
    pub(crate) fn agents(&self, scenario: &str, calls: u32) -> Sipp {
        let uas = SippRun {
            scenario,
            ip: "127.0.0.1",
            port: self.pbx_port,
            target: None,
            service: "",
            calls,
            rate: 0,
            tcp: false,
        }
        .spawn(&self.dir);
        std::thread::sleep(Duration::from_millis(300));
        uas
    }

    /// SIPp as the PBX placing `calls` calls to `queue` at `rate` a second, at most `at_once`
    /// at a time.
    pub(crate) fn callers(
        &self,
        scenario: &str,
        queue: &str,
        calls: u32,
        rate: u32,
        at_once: u32,
        tcp: bool,
    ) -> Sipp {
        SippRun {
            scenario,
            ip: "127.0.0.1",
            port: free_port(),
            target: Some(format!("127.0.0.1:{}", self.port)),
            service: queue,
            calls,
            rate,
            tcp,
        }
        .spawn_with(
            &self.dir,
            &SippMore {
                limit: Some(at_once),
                ..SippMore::default()
            },
        )
    }

    /// Waits for a SIPp run and fails the test, with both logs, unless every call succeeded.
    pub(crate) fn succeeded(&self, sipp: Sipp) {
        let (code, errors) = sipp.wait();
        assert_eq!(code, 0, "SIPp failed:\n{errors}\nsipdesk:\n{}", self.log());
    }
}
