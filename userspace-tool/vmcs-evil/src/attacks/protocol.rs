//! Phase a, protocol abuse: frames that decode, with hostile meaning.

use std::thread;
use std::time::{Duration, Instant};

use vmcs_proto::frame::{eth_gso, flags, FrameHeader, Op, SockType};

use crate::peer::Peer;

/// Malformed Ethernet frames for the net device (docs/netdev.md "Hostile input"): each
/// decodes as a frame (so the ring stays in sync) and must be dropped and counted by the
/// guest's vmcs0 (`rx_runt`, `rx_bad_csum`, `rx_bad_src`, `rx_bad_header`, and for the GSO
/// fields `rx_bad_gso`), never parsed past its length. Returns how many were sent.
pub fn eth(p: &mut Peer, t: u32) -> u32 {
    let eth = |flags: u32, src: u32, dst: u32| {
        let mut h = FrameHeader::new(Op::Eth, SockType::Stream, src, dst);
        h.flags = flags;
        h
    };
    // A frame to the broadcast address from a locally administered unicast source.
    let mut good = [0u8; 60];
    good[..6].copy_from_slice(&[0xff; 6]);
    good[6..12].copy_from_slice(&[0x02, 0xee, 0xee, 0xee, 0xee, 0xee]);
    good[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    let mut mcast_src = good;
    mcast_src[6] = 0x01;
    let partial = flags::ETH_CSUM_PARTIAL;
    let mut bad_hdr = eth(0, 0, 0);
    bad_hdr.buf_alloc = 1;
    let cases: [(FrameHeader, &[u8]); 8] = [
        // Runts: shorter than an Ethernet header.
        (eth(0, 0, 0), &good[..6]),
        (eth(0, 0, 0), &good[..13]),
        // Checksum places: inside the Ethernet header, past the end, far out.
        (eth(partial, 4, 0), &good),
        (eth(partial, 50, 20), &good),
        (eth(partial, u32::MAX, 2), &good),
        // A group address as the source.
        (eth(0, 0, 0), &mcast_src),
        // Fields that must be zero.
        (bad_hdr, &good),
        (eth(0, 14, 6), &good),
    ];
    let mut n = 0;
    for (h, payload) in cases {
        if p.send(t, h, payload) {
            n += 1;
        }
    }
    n + eth_gso_cases(p, t)
}

/// Malformed GSO fields (docs/protocol.md §10), each on an otherwise plausible TCP/IPv4
/// frame (checksum partial at the TCP header): the guest must drop and count each
/// (`rx_bad_gso`, one `rx_bad_header` for GSO without a partial checksum), never hand it
/// to its stack as a GSO packet. Returns how many were sent.
fn eth_gso_cases(p: &mut Peer, t: u32) -> u32 {
    // 200 bytes: Ethernet, IPv4 (20 bytes, TCP), TCP (20 bytes), 146 bytes of payload.
    let mut tcp4 = [0u8; 200];
    tcp4[..6].copy_from_slice(&[0xff; 6]);
    tcp4[6..12].copy_from_slice(&[0x02, 0xee, 0xee, 0xee, 0xee, 0xee]);
    tcp4[12..14].copy_from_slice(&[0x08, 0x00]);
    tcp4[14] = 0x45;
    tcp4[14 + 9] = 6;
    tcp4[34 + 12] = 0x50;
    let mut udp4 = tcp4;
    udp4[14 + 9] = 17;
    let gso = |start: u32, off: u32, size: u32, ty: u32| {
        let mut h = FrameHeader::new(Op::Eth, SockType::Stream, start, off);
        h.flags = flags::ETH_CSUM_PARTIAL;
        h.buf_alloc = size;
        h.fwd_cnt = ty;
        h
    };
    let v4 = eth_gso::TCPV4;
    let mut no_csum = gso(0, 0, 100, v4);
    no_csum.flags = 0;
    let cases: [(FrameHeader, &[u8]); 9] = [
        // Unknown type; an ECN bit alone.
        (gso(34, 16, 100, 3), &tcp4),
        (gso(34, 16, 100, eth_gso::ECN), &tcp4),
        // No segment size; one as large as the frame; one beyond 16 bits.
        (gso(34, 16, 0, v4), &tcp4),
        (gso(34, 16, 200, v4), &tcp4),
        (gso(34, 16, 1 << 16, v4), &tcp4),
        // The checksum not in a TCP header's place.
        (gso(34, 6, 100, v4), &tcp4),
        // TCPv6 on an IPv4 frame; TCPv4 on a UDP packet; no more than one segment.
        (gso(54, 16, 100, eth_gso::TCPV6), &tcp4),
        (gso(34, 16, 100, v4), &udp4),
        (gso(34, 16, 146, v4), &tcp4),
    ];
    let mut n = 0;
    for (h, payload) in cases.into_iter().chain([(no_csum, &tcp4[..])]) {
        if p.send(t, h, payload) {
            n += 1;
        }
    }
    n
}

/// Phase a: frames that decode, with hostile meaning.
pub fn run(p: &mut Peer, port: u32, ms: u64) {
    let t0 = Instant::now();
    for i in 0..p.targets.len() {
        let t = p.targets[i];
        let n = eth(p, t);
        println!("# {n} malformed ETH frames sent to peer {t}");
    }
    let mp = p.max_payload() as usize;
    let big = vec![0xa5u8; mp];
    let mut k = 0u32;
    while t0.elapsed() < Duration::from_millis(ms) {
        for i in 0..p.targets.len() {
            let t = p.targets[i];
            let src = 40000 + (k % 512);
            let seq = |op| FrameHeader::new(op, SockType::SeqPacket, src, port);
            let mut h = seq(Op::Request);
            h.buf_alloc = 1 << 20;
            match k % 8 {
                0 => {
                    p.send(t, h, &[]);
                }
                1 => {
                    // Data within credit on the connection just requested, then a
                    // CREDIT_REQUEST storm.
                    p.send(t, h, &[]);
                    let mut d = seq(Op::Rw);
                    d.flags = flags::EOM;
                    d.buf_alloc = 1 << 20;
                    p.send(t, d, b"hello from the evil peer");
                    for _ in 0..20 {
                        p.send(t, seq(Op::CreditRequest), &[]);
                    }
                }
                2 => {
                    // A credit lie: fwd_cnt acknowledges bytes never sent.
                    p.send(t, h, &[]);
                    let mut d = seq(Op::CreditUpdate);
                    d.buf_alloc = u32::MAX;
                    d.fwd_cnt = 0x8000_0000;
                    p.send(t, d, &[]);
                }
                3 => {
                    // Overrun: far more data than the guest's buffer allows.
                    p.send(t, h, &[]);
                    for _ in 0..64 {
                        let mut d = seq(Op::Rw);
                        d.buf_alloc = 1 << 20;
                        if !p.send(t, d, &big) {
                            break;
                        }
                    }
                }
                4 => {
                    // Unsolicited RESPONSE, SHUTDOWN then data, a stream frame on a
                    // seqpacket connection.
                    p.send(t, h, &[]);
                    p.send(t, seq(Op::Response), &[]);
                    let mut s = seq(Op::Shutdown);
                    s.flags = flags::SHUTDOWN_RCV | flags::SHUTDOWN_SEND;
                    p.send(t, s, &[]);
                    let mut d = seq(Op::Rw);
                    d.flags = flags::EOM;
                    p.send(t, d, b"after shutdown");
                    let d = FrameHeader::new(Op::Rw, SockType::Stream, src, port);
                    p.send(t, d, b"wrong type");
                }
                5 => {
                    // RST storm: random ports, and the listener's port from random
                    // sources.
                    for j in 0..64 {
                        let dst = if j % 2 == 0 { port } else { p.rng.u32() };
                        let r = FrameHeader::new(Op::Rst, SockType::SeqPacket, p.rng.u32(), dst);
                        p.send(t, r, &[]);
                    }
                }
                6 => {
                    // Data and requests to unbound ports (the guest answers RST).
                    for _ in 0..16 {
                        let dst = 1024 + p.rng.u32() % 60000;
                        let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, src, dst);
                        d.flags = flags::EOM;
                        p.send(t, d, b"nobody home");
                        let r = FrameHeader::new(Op::Request, SockType::Stream, src, dst);
                        p.send(t, r, &[]);
                    }
                }
                _ => {
                    // Frames on the connections the guest accepted.
                    let acc: Vec<u32> = p
                        .accepted
                        .iter()
                        .filter(|(g, _)| *g == t)
                        .map(|(_, p)| *p)
                        .take(8)
                        .collect();
                    for ours in acc {
                        let mut d = FrameHeader::new(Op::Rw, SockType::SeqPacket, ours, port);
                        d.flags = flags::EOM;
                        d.fwd_cnt = p.rng.u32();
                        p.send(t, d, b"lie");
                    }
                }
            }
        }
        k += 1;
        p.pump();
        thread::sleep(Duration::from_millis(2));
    }
}
