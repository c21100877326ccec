//! A session on real loopback sockets: a test socket plays the caller.

use std::time::Duration;

use super::*;
use crate::media::g711::Law;
use crate::media::session::{PTIME, SAMPLES_PER_PACKET};

fn settings() -> Settings {
    Settings {
        law: Law::Mu,
        payload_type: 0,
        telephone_event: Some(101),
        ssrc: 7,
        first_sequence: 100,
        first_timestamp: 0,
        silence: Duration::from_secs(5),
        max_length: Duration::from_secs(60),
    }
}

fn audio(sequence: u16, timestamp: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..SAMPLES_PER_PACKET)
        .map(|n| Law::Mu.encode(if n % 16 < 8 { 6000 } else { -6000 }))
        .collect();
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(0)
        .sequence(rtp_rs::Seq::from(sequence))
        .timestamp(timestamp)
        .payload(&payload)
        .build()
        .unwrap()
}

fn pound(sequence: u16) -> Vec<u8> {
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(101)
        .sequence(rtp_rs::Seq::from(sequence))
        .timestamp(99_999)
        .payload(&[11, 0x80 | 10, 0x03, 0x20])
        .build()
        .unwrap()
}

struct Call {
    caller: UdpSocket,
    media: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
    done: tokio::task::JoinHandle<Result<Recorded, MediaError>>,
    file: PathBuf,
    _lease: Lease,
}

async fn start(name: &str, greeting_packets: usize, signalling_source: IpAddr) -> Call {
    let ports = Ports::new(30000..=39999, 10);
    let lease = ports.take().unwrap();
    // The port may be taken by something else on this machine: try the next ones.
    let mut lease = lease;
    let socket = loop {
        match bind("127.0.0.1".parse().unwrap(), &lease).await {
            Ok(socket) => break socket,
            Err(_) => lease = ports.take().unwrap(),
        }
    };
    let media = socket.local_addr().unwrap();
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let file = std::env::temp_dir().join(format!("sipdesk-{name}-{}.wav", std::process::id()));
    let (control, commands) = mpsc::unbounded_channel();
    let spec = Spec {
        remote: caller.local_addr().unwrap(),
        signalling_source,
        settings: settings(),
        greeting: Arc::new(crate::media::greeting::Greeting::from_samples(&vec![
            3000i16;
            greeting_packets * SAMPLES_PER_PACKET
        ])),
        file: file.clone(),
    };
    let done = tokio::spawn(run(socket, spec, commands));
    Call {
        caller,
        media,
        control,
        done,
        file,
        _lease: lease,
    }
}

/// Receives `n` packets from sipdesk; returns their sequence numbers.
async fn receive(caller: &UdpSocket, n: usize) -> Vec<u16> {
    let mut buffer = [0u8; 2048];
    let mut sequences = Vec::new();
    for _ in 0..n {
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), caller.recv_from(&mut buffer))
            .await
            .expect("a packet from sipdesk")
            .unwrap();
        let packet = rtp_rs::RtpReader::new(&buffer[..len]).unwrap();
        sequences.push(u16::from(packet.sequence_number()));
    }
    sequences
}

#[tokio::test]
async fn the_caller_hears_the_greeting_and_tone_and_is_recorded_until_pound() {
    let call = start("pound", 10, "127.0.0.1".parse().unwrap()).await;
    // 10 greeting packets and 20 of tone, numbered on.
    let sequences = receive(&call.caller, 30).await;
    assert_eq!(sequences, (100..130).collect::<Vec<u16>>());
    // One second of speech, then #.
    for i in 0..50u16 {
        call.caller
            .send_to(&audio(i, u32::from(i) * 160), call.media)
            .await
            .unwrap();
        tokio::time::sleep(PTIME).await;
    }
    call.caller.send_to(&pound(50), call.media).await.unwrap();
    let recorded = call.done.await.unwrap().unwrap();
    assert_eq!(recorded.end, Some(End::Pound));
    assert_eq!(recorded.samples, 8000);
    let bytes = std::fs::read(&call.file).unwrap();
    let wav = crate::media::wav::read(&bytes).unwrap();
    assert_eq!(wav.duration(), Duration::from_secs(1));
    let _ = std::fs::remove_file(&call.file);
}

#[tokio::test]
async fn a_caller_who_hangs_up_during_the_greeting_leaves_no_file() {
    let call = start("hangup", 100, "127.0.0.1".parse().unwrap()).await;
    receive(&call.caller, 5).await;
    call.control.send(Control::Stop).unwrap();
    let recorded = call.done.await.unwrap().unwrap();
    assert_eq!(recorded.samples, 0);
    assert_eq!(recorded.file, None);
    assert!(!call.file.exists());
}

#[tokio::test]
async fn rtp_from_elsewhere_is_dropped_and_nat_latches_only_to_the_signalling_source() {
    // The signalling came from 127.0.0.2: packets from 127.0.0.1's other sockets are strangers.
    let call = start("stranger", 1, "127.0.0.2".parse().unwrap()).await;
    receive(&call.caller, 21).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10u16 {
        stranger
            .send_to(&audio(i, u32::from(i) * 160), call.media)
            .await
            .unwrap();
    }
    // A phone behind NAT: the signalling source's address, another port.
    let natted = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for i in 0..10u16 {
        natted
            .send_to(&audio(i, u32::from(i) * 160), call.media)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.control.send(Control::Stop).unwrap();
    let recorded = call.done.await.unwrap().unwrap();
    assert_eq!(
        recorded.samples, 1600,
        "the ten packets from the NAT'd phone only"
    );
    let _ = std::fs::remove_file(&call.file);
}

#[test]
fn ports_are_even_limited_to_max_sessions_and_given_back() {
    let ports = Ports::new(16000..=16009, 3);
    let a = ports.take().unwrap();
    let b = ports.take().unwrap();
    let c = ports.take().unwrap();
    assert_eq!([a.port(), b.port(), c.port()], [16000, 16002, 16004]);
    assert!(ports.take().is_none(), "max_sessions reached");
    drop(b);
    assert_eq!(ports.in_use(), 2);
    // Round-robin: the port just given back is not the next one taken.
    let d = ports.take().unwrap();
    assert_eq!(d.port(), 16006);
    drop(d);
    drop(a);
    assert_eq!(ports.take().unwrap().port(), 16008);
    assert_eq!(ports.take().unwrap().port(), 16000, "around again");
    let few = Ports::new(16000..=16003, 10);
    let _x = few.take().unwrap();
    let _y = few.take().unwrap();
    assert!(few.take().is_none(), "the range is used up");
}

#[tokio::test]
async fn a_caller_who_only_sends_quiet_audio_leaves_no_file() {
    let call = start("quiet", 1, "127.0.0.1".parse().unwrap()).await;
    receive(&call.caller, 21).await;
    let quiet: Vec<u8> = (0..SAMPLES_PER_PACKET).map(|_| Law::Mu.encode(3)).collect();
    for i in 0..20u16 {
        let packet = rtp_rs::RtpPacketBuilder::new()
            .payload_type(0)
            .sequence(rtp_rs::Seq::from(i))
            .timestamp(u32::from(i) * 160)
            .payload(&quiet)
            .build()
            .unwrap();
        call.caller.send_to(&packet, call.media).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.control.send(Control::Stop).unwrap();
    let recorded = call.done.await.unwrap().unwrap();
    assert_eq!(recorded.samples, 3200, "recorded, but nothing said");
    assert_eq!(recorded.file, None);
    assert!(!call.file.exists());
}
