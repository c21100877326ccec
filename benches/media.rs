//! Voicemail media at scale: `--sessions N` (200) greeting sessions at once, each on its own
//! loopback UDP socket run by [`sipdesk::media::runner`] on one thread (as the daemon would),
//! each playing a `--seconds S` (10) greeting to a listening socket read on another thread.
//! Reports the CPU the sessions' thread spent (user + system, getrusage RUSAGE_THREAD) per
//! session-second of media, and the jitter of the greeting's
//! packets: for every packet, how far its arrival strays from its session's 20 ms grid (against
//! the session's median offset), and how far each gap between two packets strays from 20 ms, as p50/p99/max.
//!
//! `cargo bench --bench media` runs the full measure; under `cargo test` it runs a small smoke
//! version (5 sessions, 1 s) that only checks every packet arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sipdesk::media::g711::Law;
use sipdesk::media::greeting::Greeting;
use sipdesk::media::runner::{self, Control, Ports, Spec};
use sipdesk::media::session::{PTIME, SAMPLES_PER_PACKET, Settings};

/// The CPU time of the calling thread: the one running the sessions.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (sessions, seconds) = if full {
        (value("--sessions", 200), value("--seconds", 10))
    } else {
        (5, 1)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(sessions, seconds));
}

async fn measure(sessions: usize, seconds: usize) {
    let packets = seconds * 1000 / PTIME.as_millis() as usize;
    let samples: Vec<i16> = (0..packets * SAMPLES_PER_PACKET)
        .map(|n| ((n as f32 * 0.3).sin() * 6000.0) as i16)
        .collect();
    let greeting = Arc::new(Greeting::from_samples(&samples));
    let ports = Ports::new(20000..=29999, sessions);
    // The listeners (the callers) run on their own thread, so measuring them does not slow
    // the sessions' thread.
    let mut listeners = Vec::new();
    let mut controls = Vec::new();
    let mut tasks = Vec::new();
    let mut leases = Vec::new();
    for n in 0..sessions {
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut lease = ports.take().unwrap();
        let socket = loop {
            match runner::bind("127.0.0.1".parse().unwrap(), &lease).await {
                Ok(socket) => break socket,
                Err(_) => lease = ports.take().expect("a free port"),
            }
        };
        let (control, commands) = tokio::sync::mpsc::unbounded_channel();
        let spec = Spec {
            remote: caller.local_addr().unwrap(),
            signalling_source: "127.0.0.1".parse().unwrap(),
            settings: Settings {
                law: if n % 2 == 0 { Law::Mu } else { Law::A },
                payload_type: if n % 2 == 0 { 0 } else { 8 },
                telephone_event: Some(101),
                ssrc: n as u32,
                first_sequence: fastrand::u16(..),
                first_timestamp: fastrand::u32(..),
                silence: Duration::from_secs(60),
                max_length: Duration::from_secs(60),
            },
            greeting: greeting.clone(),
            file: std::env::temp_dir()
                .join(format!("sipdesk-bench-{}-{n}.wav", std::process::id())),
        };
        listeners.push(caller);
        controls.push(control);
        tasks.push(tokio::spawn(runner::run(socket, spec, commands)));
        leases.push(lease);
    }
    let expected = packets + 20; // the greeting and the tone
    let listening = std::thread::spawn(move || {
        // Each listener's arrival times, read round-robin with short timeouts.
        let mut arrivals: Vec<Vec<Instant>> = vec![Vec::new(); listeners.len()];
        for socket in &listeners {
            socket.set_nonblocking(true).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 30);
        let mut buffer = [0u8; 2048];
        while arrivals.iter().any(|a| a.len() < expected) && Instant::now() < deadline {
            let mut any = false;
            for (socket, times) in listeners.iter().zip(arrivals.iter_mut()) {
                while socket.recv(&mut buffer).is_ok() {
                    times.push(Instant::now());
                    any = true;
                }
            }
            if !any {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        arrivals
    });
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let arrivals = tokio::task::spawn_blocking(move || listening.join().unwrap())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    for control in &controls {
        let _ = control.send(Control::Stop);
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(leases);
    let mut lateness: Vec<f64> = Vec::new();
    let mut gaps: Vec<f64> = Vec::new();
    let mut received = 0;
    for times in &arrivals {
        received += times.len();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0;
            gaps.push((gap - PTIME.as_secs_f64() * 1000.0).abs());
        }
        let Some(first) = times.first() else { continue };
        // Each packet's offset from the session's 20 ms grid, against the session's median
        // offset (a session's first packet may leave late, when 200 start at once).
        let mut offsets: Vec<f64> = times
            .iter()
            .enumerate()
            .map(|(i, at)| {
                at.duration_since(*first).as_secs_f64() * 1000.0
                    - i as f64 * PTIME.as_secs_f64() * 1000.0
            })
            .collect();
        let mut sorted = offsets.clone();
        sorted.sort_by(f64::total_cmp);
        let median = percentile(&sorted, 0.5);
        lateness.extend(offsets.drain(..).map(|o| (o - median).abs()));
    }
    lateness.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    assert_eq!(
        received,
        sessions * expected,
        "every greeting and tone packet arrives"
    );
    println!(
        "{sessions} sessions, {seconds} s greeting each: {received} packets in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "CPU of the sessions' thread: {cpu:.2} s, {:.3} ms per session-second of media ({:.1}% of one core)",
        cpu * 1000.0 / (sessions as f64 * (seconds as f64 + 0.4)),
        cpu * 100.0 / elapsed.as_secs_f64()
    );
    println!(
        "packet timing against each session's 20 ms grid: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or_default()
    );
    println!(
        "gap between consecutive packets, off 20 ms by: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or_default()
    );
}
