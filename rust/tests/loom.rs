//! Loom model check of the ring protocol, including notification
//! suppression (no lost wake-up) and the epoch handshake.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test --release --test loom`
//! (see `scripts/loom.sh`).
//!
//! Control words are loom atomics (every access is a scheduling point and
//! weak-memory behaviour is explored). Ring data lives in loom `UnsafeCell`s,
//! one per 32-byte record chunk, so loom reports any payload/header access
//! that is not ordered by the acquire/release protocol as a data race.
//! Doorbells are a mutex+condvar: a lost wake-up leaves a thread blocked
//! forever, which loom reports as a deadlock. Sleep flags carry tokens
//! (docs/protocol.md §5.2): each side rings once per token, so a model that
//! got the token rule wrong (a sleeper re-using its token, a ringer not
//! re-checking) deadlocks here too.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use vmcs_proto::frame::{FrameHeader, Op, SockType};
use vmcs_proto::ring::{Channel, Consumer, Producer, RingError, Site, SleepCheck};
use vmcs_proto::shm::Shm;

const CTRL: usize = 128;
const CHUNK: usize = 32;
const RING: u32 = 128;
/// The ring of the batching model: a quarter (128) is two 64-byte records.
const BIG_RING: u32 = 512;

struct LoomShm {
    ctrl: Vec<AtomicU32>,
    data: Vec<UnsafeCell<[u8; CHUNK]>>,
    ring: u32,
}

impl LoomShm {
    fn new(ring: u32) -> Self {
        Self {
            ctrl: (0..CTRL / 4).map(|_| AtomicU32::new(0)).collect(),
            data: (0..ring as usize / CHUNK)
                .map(|_| UnsafeCell::new([0; CHUNK]))
                .collect(),
            ring,
        }
    }
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off < CTRL);
        &self.ctrl[off / 4]
    }
    fn chunks(&self, off: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
        assert!(
            off >= CTRL && off + len <= CTRL + self.ring as usize,
            "ring access out of bounds"
        );
        let mut done = 0;
        while done < len {
            let o = off - CTRL + done;
            let (ci, co) = (o / CHUNK, o % CHUNK);
            // Indexing `data` checks the end (the ring's own size is the caller's).
            let n = (CHUNK - co).min(len - done);
            f(ci, co, done, n);
            done += n;
        }
    }
}

impl Shm for LoomShm {
    fn size(&self) -> usize {
        CTRL + self.ring as usize
    }
    fn load_u32_acquire(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Acquire)
    }
    fn load_u32_relaxed(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }
    fn store_u32_release(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Release)
    }
    fn store_u32_relaxed(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Relaxed)
    }
    fn cmpxchg_u32(&self, off: usize, old: u32, new: u32) -> Result<u32, u32> {
        self.word(off)
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
    }
    fn load_u64_acquire(&self, _: usize) -> u64 {
        unreachable!("ring uses no u64")
    }
    fn load_u64_relaxed(&self, _: usize) -> u64 {
        unreachable!("ring uses no u64")
    }
    fn store_u64_release(&self, _: usize, _: u64) {
        unreachable!("ring uses no u64")
    }
    fn store_u64_relaxed(&self, _: usize, _: u64) {
        unreachable!("ring uses no u64")
    }
    fn fence_full(&self) {
        fence(Ordering::SeqCst);
    }
    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        self.chunks(off, dst.len(), |ci, co, d, n| {
            self.data[ci].with(|p| {
                // SAFETY: loom tracks this access; the pointer is valid for
                // the chunk and any unsynchronised concurrent write is
                // reported by loom as a race.
                let c = unsafe { &*p };
                dst[d..d + n].copy_from_slice(&c[co..co + n]);
            });
        });
    }
    fn write_bytes(&self, off: usize, src: &[u8]) {
        self.chunks(off, src.len(), |ci, co, d, n| {
            self.data[ci].with_mut(|p| {
                // SAFETY: as in read_bytes; loom checks exclusivity.
                let c = unsafe { &mut *p };
                c[co..co + n].copy_from_slice(&src[d..d + n]);
            });
        });
    }
}

#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut r = self.rung.lock().unwrap();
        while !*r {
            r = self.cv.wait(r).unwrap();
        }
        *r = false;
    }
}

struct World {
    shm: LoomShm,
    cons_bell: Bell,
    prod_bell: Bell,
}

fn hdr(len: u32) -> FrameHeader {
    let mut h = FrameHeader::new(Op::Rw, SockType::Stream, 1, 2);
    h.len = len;
    h
}

/// The producer found no room: arm its wait (fresh token, fence, re-check) and
/// sleep until the consumer's space doorbell.
fn wait_space(w: &World, p: &mut Producer) {
    match p.prepare_wait(&w.shm, 4).unwrap() {
        SleepCheck::Pending => {}
        SleepCheck::MaySleep => {
            w.prod_bell.wait();
            p.cancel_wait(&w.shm);
        }
    }
}

fn produce(w: &World, p: &mut Producer, msgs: u32) {
    for k in 0..msgs {
        let payload = [k as u8 + 1; 4];
        loop {
            match p.send(&w.shm, &hdr(4), &payload) {
                Ok(notify) => {
                    if notify {
                        w.cons_bell.ring();
                    }
                    break;
                }
                Err(RingError::Full) | Err(RingError::NotReady) => wait_space(w, p),
                Err(e) => panic!("producer error {e:?}"),
            }
        }
    }
}

fn consume(w: &World, c: &mut Consumer, msgs: u32) {
    let mut got = 0;
    while got < msgs {
        match c.peek(&w.shm) {
            Ok(Some(f)) => {
                let mut b = [0u8; 4];
                assert_eq!(c.read(&w.shm, &f, 0, &mut b), 4);
                assert_eq!(b, [got as u8 + 1; 4], "message out of order or torn");
                if c.consume(&w.shm, &f) {
                    w.prod_bell.ring();
                }
                got += 1;
            }
            Ok(None) => match c.prepare_sleep(&w.shm) {
                SleepCheck::Pending => {}
                SleepCheck::MaySleep => {
                    w.cons_bell.wait();
                    c.cancel_sleep(&w.shm);
                }
            },
            Err(RingError::Restarted { .. }) => {
                if c.resync(&w.shm) {
                    w.prod_bell.ring();
                }
            }
            Err(e) => panic!("consumer error {e:?}"),
        }
    }
}

fn world() -> Arc<World> {
    world_of(RING)
}

fn world_of(ring: u32) -> Arc<World> {
    Arc::new(World {
        shm: LoomShm::new(ring),
        cons_bell: Bell::default(),
        prod_bell: Bell::default(),
    })
}

fn chan() -> Channel {
    Channel::from_parts(0, CTRL, RING).unwrap()
}

/// The producer as the kernel's transmit pump runs it: frames of one batch are
/// committed without publishing, then published once (one doorbell at most);
/// a full ring publishes what is committed before the producer waits.
fn produce_batched(w: &World, p: &mut Producer, msgs: u32, batch: u32) {
    let mut k = 0;
    while k < msgs {
        let mut in_batch = 0;
        while in_batch < batch && k < msgs {
            match p.reserve(&w.shm, &hdr(4)) {
                Ok(r) => {
                    p.write(&w.shm, &r, 0, &[k as u8 + 1; 4]);
                    assert!(p.commit_deferred(&w.shm, r));
                    k += 1;
                    in_batch += 1;
                }
                Err(RingError::Full) | Err(RingError::NotReady) => {
                    if p.unpublished() && p.publish(&w.shm) {
                        w.cons_bell.ring();
                    }
                    wait_space(w, p);
                }
                Err(e) => panic!("producer error {e:?}"),
            }
        }
        if p.publish(&w.shm) {
            w.cons_bell.ring();
        }
    }
}

/// The consumer as the kernel's rx work runs it: every pass clears the flag
/// first (it is awake), takes up to `budget` frames releasing in batches
/// (`release_batched`), releases the rest at the end of the pass, and only an
/// empty ring arms the flag (fresh token, fence, re-check) before sleeping.
fn consume_passes(w: &World, c: &mut Consumer, msgs: u32, budget: u32) {
    let mut got = 0;
    let mut asleep = false;
    while got < msgs {
        if asleep {
            w.cons_bell.wait();
            asleep = false;
        }
        c.cancel_sleep(&w.shm);
        let mut n = 0;
        loop {
            if n == budget {
                break;
            }
            match c.peek(&w.shm) {
                Ok(Some(f)) => {
                    let mut b = [0u8; 4];
                    assert_eq!(c.read(&w.shm, &f, 0, &mut b), 4);
                    assert_eq!(b, [got as u8 + 1; 4], "message out of order or torn");
                    assert!(c.consume_deferred(&f));
                    if c.release_batched(&w.shm) {
                        w.prod_bell.ring();
                    }
                    got += 1;
                    n += 1;
                }
                Ok(None) => {
                    if c.release_at_watermark(&w.shm) {
                        w.prod_bell.ring();
                    }
                    if got == msgs {
                        break;
                    }
                    match c.prepare_sleep(&w.shm) {
                        SleepCheck::Pending => continue,
                        SleepCheck::MaySleep => asleep = true,
                    }
                    break;
                }
                Err(e) => panic!("consumer error {e:?}"),
            }
        }
        if c.release_at_watermark(&w.shm) {
            w.prod_bell.ring();
        }
    }
}

/// Steady state: 3 messages through a ring that holds 2 records, so the
/// producer must also wait for space. Both sides use notification
/// suppression; a lost wake-up deadlocks.
#[test]
fn ring_no_lost_wakeup() {
    loom::model(|| {
        let w = world();
        let (mut c, _) = Consumer::open(&w.shm, chan());
        let (mut p, _) = Producer::open(&w.shm, chan());
        assert!(matches!(c.peek(&w.shm), Err(RingError::Restarted { .. })));
        c.resync(&w.shm);
        let w2 = w.clone();
        let t = thread::spawn(move || produce(&w2, &mut p, 3));
        consume(&w, &mut c, 3);
        t.join().unwrap();
    });
}

/// Epoch handshake: the producer opens concurrently with a consumer that
/// already acked the previous epoch and may be asleep.
#[test]
fn ring_open_handshake() {
    loom::model(|| {
        let w = world();
        let (mut c, _) = Consumer::open(&w.shm, chan());
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let (mut p, notify) = Producer::open(&w2.shm, chan());
            if notify {
                w2.cons_bell.ring();
            }
            produce(&w2, &mut p, 2);
        });
        consume(&w, &mut c, 2);
        t.join().unwrap();
    });
}

/// Batching and suppression together, as the module runs them: the producer
/// publishes two frames per batch and waits for space when the ring is full;
/// the consumer drains in passes of at most two frames, releasing every quarter
/// ring and at the end of a pass, and re-arms only on an empty ring. Five
/// messages through a ring of four records: both sides must wait, and a lost
/// doorbell (data or space) deadlocks.
#[test]
fn ring_batched_no_lost_wakeup() {
    loom::model(|| {
        let w = world_of(BIG_RING);
        let ch = Channel::from_parts(0, CTRL, BIG_RING).unwrap();
        let (mut c, _) = Consumer::open(&w.shm, ch);
        let (mut p, _) = Producer::open(&w.shm, ch);
        assert!(matches!(c.peek(&w.shm), Err(RingError::Restarted { .. })));
        c.resync(&w.shm);
        let w2 = w.clone();
        let t = thread::spawn(move || produce_batched(&w2, &mut p, 5, 2));
        consume_passes(&w, &mut c, 5, 2);
        t.join().unwrap();
    });
}

/// Protocol v2: the consumer attaches before the producer published a ring (it sees none
/// and may sleep), the producer carves and opens one (offset and size, then the epoch with
/// release); the consumer must wake, read the ring once after the epoch, accept it, and the
/// message arrive intact.
#[test]
fn ring_published_open() {
    loom::model(|| {
        // The published ring is 512 B at offset 512 (aligned to its size).
        let w = world_of((1024 - CTRL) as u32);
        let site = Site::from_parts(0, 512, 512);
        let (mut c, _) = Consumer::attach(&w.shm, site);
        assert!(!c.is_open());
        let w2 = w.clone();
        let t = thread::spawn(move || {
            let ch = site.channel(512, 512).unwrap();
            let (mut p, notify) = Producer::open(&w2.shm, ch);
            if notify {
                w2.cons_bell.ring();
            }
            produce(&w2, &mut p, 1);
        });
        consume(&w, &mut c, 1);
        assert!(c.is_open());
        assert_eq!(c.channel().size(), 512);
        t.join().unwrap();
    });
}
