//! Credit flow control against a model sender/receiver pair.
use proptest::prelude::*;
use vmcs_proto::flow::{FlowError, RxCredit, TxCredit, MAX_BUF_ALLOC};

#[derive(Debug, Clone)]
enum Ev {
    Send(u32),
    Deliver,
    AppRead(u32),
    CreditFrame,
    Resize(u32),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        Just(Ev::Deliver),
        (0u32..100_000).prop_map(Ev::Send),
        (0u32..100_000).prop_map(Ev::AppRead),
        Just(Ev::CreditFrame),
        (0u32..300_000).prop_map(Ev::Resize),
    ]
}

proptest! {
    /// An honest pair never overruns, the sender never exceeds the buffer,
    /// and when everything is consumed the sender is either unblocked or the
    /// receiver wants to send an update (no credit deadlock).
    #[test]
    fn honest_pair(buf in 1u32..300_000, evs in proptest::collection::vec(ev(), 1..300)) {
        let mut tx = TxCredit::new();
        let mut rx = RxCredit::new(buf);
        let (a, f) = rx.advertise();
        tx.on_peer_credit(a, f).unwrap();
        let mut wire: std::collections::VecDeque<u32> = Default::default();
        for e in evs {
            match e {
                Ev::Send(n) => {
                    let n = n.min(tx.peer_free());
                    tx.on_send(n).unwrap();
                    wire.push_back(n);
                    prop_assert!(tx.in_flight() <= MAX_BUF_ALLOC);
                }
                Ev::Deliver => if let Some(n) = wire.pop_front() { rx.on_recv(n).unwrap(); },
                Ev::AppRead(n) => { let n = n.min(rx.queued()); rx.on_consumed(n).unwrap(); }
                Ev::CreditFrame => { let (a, f) = rx.advertise(); tx.on_peer_credit(a, f).unwrap(); }
                Ev::Resize(n) => rx.set_buf_alloc(n.max(1)),
            }
        }
        // Deliver all, consume all.
        while let Some(n) = wire.pop_front() { rx.on_recv(n).unwrap(); }
        let q = rx.queued();
        rx.on_consumed(q).unwrap();
        if tx.peer_free() == 0 {
            prop_assert!(rx.needs_update());
            let (a, f) = rx.advertise();
            tx.on_peer_credit(a, f).unwrap();
            prop_assert!(tx.peer_free() > 0);
        }
    }

    /// Hostile credit values never create credit beyond the clamped buffer,
    /// never panic, and acknowledgements of unsent data are rejected.
    #[test]
    fn hostile_credit(sent in 0u32..1_000_000, claims in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..50)) {
        let mut tx = TxCredit::new();
        tx.on_peer_credit(u32::MAX, 0).unwrap();
        let sent = sent.min(tx.peer_free());
        tx.on_send(sent).unwrap();
        for (a, f) in claims {
            let before = tx;
            match tx.on_peer_credit(a, f) {
                Ok(()) => prop_assert!(f.wrapping_sub(before.tx_cnt().wrapping_sub(before.in_flight())) <= before.in_flight()),
                Err(FlowError::BogusFwdCnt) => prop_assert_eq!(tx, before),
                Err(e) => prop_assert!(false, "{e:?}"),
            }
            prop_assert!(tx.peer_free() <= MAX_BUF_ALLOC);
            prop_assert!(tx.in_flight() <= sent);
            prop_assert_eq!(tx.on_send(tx.peer_free().saturating_add(1)), Err(FlowError::NoCredit));
        }
    }

    /// A peer that sends more than advertised is caught.
    #[test]
    fn overrun_detected(buf in 1u32..100_000, extra in 1u32..1000) {
        let mut rx = RxCredit::new(buf);
        rx.advertise();
        prop_assert_eq!(rx.on_recv(buf + extra), Err(FlowError::Overrun));
        rx.on_recv(buf).unwrap();
        prop_assert_eq!(rx.on_recv(1), Err(FlowError::Overrun));
        prop_assert_eq!(rx.on_consumed(buf + 1), Err(FlowError::BadConsume));
    }
}

/// Counters wrap past 2^32 without spurious errors.
#[test]
fn counters_wrap() {
    let mut tx = TxCredit::new();
    let mut rx = RxCredit::new(256 * 1024);
    let (a, f) = rx.advertise();
    tx.on_peer_credit(a, f).unwrap();
    let mut total: u64 = 0;
    while total < (5u64 << 30) {
        let n = tx.peer_free().min(65536);
        tx.on_send(n).unwrap();
        rx.on_recv(n).unwrap();
        rx.on_consumed(n).unwrap();
        total += u64::from(n);
        if rx.needs_update() {
            let (a, f) = rx.advertise();
            tx.on_peer_credit(a, f).unwrap();
        }
        assert!(tx.peer_free() > 0 || rx.needs_update());
    }
}

#[test]
fn unsend_gives_back_only_what_never_left() {
    let mut tx = TxCredit::new();
    let mut rx = RxCredit::new(4096);
    let (a, f) = rx.advertise();
    tx.on_peer_credit(a, f).unwrap();
    // 3000 accounted, 1000 of them reach the peer and are read and acknowledged.
    tx.on_send(3000).unwrap();
    rx.on_recv(1000).unwrap();
    rx.on_consumed(1000).unwrap();
    let (a, f) = rx.advertise();
    tx.on_peer_credit(a, f).unwrap();
    assert_eq!(tx.in_flight(), 2000);
    // The send was cut short after those 1000: the other 2000 never left.
    tx.on_unsend(2000);
    assert_eq!(tx.in_flight(), 0);
    assert_eq!(tx.peer_free(), 4096);
    // More than is in flight is clamped: the acknowledgement stays valid.
    tx.on_unsend(10);
    assert_eq!(tx.tx_cnt(), 1000);
    assert!(tx.on_peer_credit(a, f).is_ok());
}
