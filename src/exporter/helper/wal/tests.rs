use super::*;

fn wal_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn drain(w: &Wal) -> Vec<Record> {
    std::iter::from_fn(|| w.next().expect("next")).collect()
}

#[test]
fn records_come_back_in_order_with_their_signal_and_items() {
    let d = tempfile::tempdir().expect("tempdir");
    let (w, rec) = Wal::open(d.path(), 1 << 20).expect("open");
    assert_eq!(rec, Recovered::default());
    w.append(Signal::Traces, 5, b"a").expect("append");
    w.append(Signal::Metrics, 2, b"bb").expect("append");
    w.append(Signal::Logs, 1, b"ccc").expect("append");
    let got = drain(&w);
    let seen: Vec<_> = got
        .iter()
        .map(|r| (r.signal, r.items, r.payload.as_ref()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Signal::Traces, 5, &b"a"[..]),
            (Signal::Metrics, 2, &b"bb"[..]),
            (Signal::Logs, 1, &b"ccc"[..])
        ]
    );
    // 13-byte headers: 14 + 15 + 16.
    assert_eq!(w.usage(), (45, 1 << 20));
    assert_eq!(w.pending(), 3);
    for r in got {
        w.ack(r.id);
    }
    assert_eq!(w.pending(), 0);
    // The only segment is the one being written: emptied in place, not deleted.
    assert_eq!(w.usage().0, 0);
    w.sync().expect("sync");
}

#[test]
fn a_restart_sends_again_only_what_was_not_acknowledged() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (w, _) = Wal::open(d.path(), 1 << 20).expect("open");
        w.append(Signal::Traces, 1, b"first").expect("append");
        w.append(Signal::Traces, 2, b"second").expect("append");
        w.append(Signal::Traces, 3, b"third").expect("append");
        let got = drain(&w);
        w.ack(got[1].id);
        // Dropped without sync: a killed process leaves its writes in the page cache.
    }
    let (w, rec) = Wal::open(d.path(), 1 << 20).expect("reopen");
    assert_eq!(
        rec,
        Recovered {
            requests: 2,
            bytes: (13 + 5) + (13 + 5),
            corrupted: 0,
            corrupted_bytes: 0
        }
    );
    let again: Vec<_> = drain(&w).into_iter().map(|r| r.payload).collect();
    assert_eq!(again, vec![&b"first"[..], &b"third"[..]]);
    assert_eq!(w.pending(), 2);
}

#[test]
fn a_torn_tail_is_cut_off_and_the_records_before_it_survive() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (w, _) = Wal::open(d.path(), 1 << 20).expect("open");
        w.append(Signal::Logs, 4, b"one").expect("append");
        w.append(Signal::Logs, 4, b"two").expect("append");
    }
    let seg = wal_files(d.path(), "wal").pop().expect("a segment");
    // Half a record: a header that promises 100 bytes, then 5 of them.
    let mut torn = Vec::new();
    torn.extend_from_slice(&100u32.to_le_bytes());
    torn.extend_from_slice(&[0xAB; 9]);
    torn.extend_from_slice(b"12345");
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&torn).expect("write");
    drop(f);
    let (w, rec) = Wal::open(d.path(), 1 << 20).expect("reopen");
    assert_eq!(rec.requests, 2);
    assert_eq!((rec.corrupted, rec.corrupted_bytes), (1, 18));
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), 32);
    let got: Vec<_> = drain(&w).into_iter().map(|r| r.payload).collect();
    assert_eq!(got, vec![&b"one"[..], &b"two"[..]]);
}

#[test]
fn a_record_failing_its_checksum_ends_the_segment() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (w, _) = Wal::open(d.path(), 1 << 20).expect("open");
        for p in [&b"aaaa"[..], b"bbbb", b"cccc"] {
            w.append(Signal::Traces, 1, p).expect("append");
        }
    }
    let seg = wal_files(d.path(), "wal").pop().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    // Records are 17 bytes; flip a payload byte of the second one.
    bytes[17 + 13 + 1] ^= 0xFF;
    std::fs::write(&seg, &bytes).expect("write");
    let (w, rec) = Wal::open(d.path(), 1 << 20).expect("reopen");
    assert_eq!(rec.requests, 1);
    assert_eq!((rec.corrupted, rec.corrupted_bytes), (1, 34));
    let got: Vec<_> = drain(&w).into_iter().map(|r| r.payload).collect();
    assert_eq!(got, vec![&b"aaaa"[..]]);
}

#[test]
fn the_size_is_bounded_and_acknowledging_frees_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let (w, _) = Wal::open(d.path(), 100).expect("open");
    w.append(Signal::Traces, 1, &[7; 50])
        .expect("63 of 100 bytes");
    assert!(matches!(
        w.append(Signal::Traces, 1, &[7; 50]),
        Err(WalError::Full { used: 63, max: 100 })
    ));
    assert!(matches!(
        w.append(Signal::Traces, 1, &[7; 88]),
        Err(WalError::TooLarge(101))
    ));
    let r = w.next().expect("next").expect("a record");
    w.ack(r.id);
    w.append(Signal::Traces, 1, &[7; 50]).expect("room again");
}

#[test]
fn full_segments_rotate_and_are_deleted_once_delivered() {
    let d = tempfile::tempdir().expect("tempdir");
    // 512 KiB: 64 KiB segments, three 20 KiB records each.
    let (w, _) = Wal::open(d.path(), 512 * 1024).expect("open");
    let payload = vec![1u8; 20 * 1024];
    for _ in 0..10 {
        w.append(Signal::Traces, 1, &payload).expect("append");
    }
    assert_eq!(wal_files(d.path(), "wal").len(), 4);
    let got = drain(&w);
    assert_eq!(got.len(), 10);
    // Acknowledge out of order, as concurrent senders do; acks of finished segments delete them.
    for r in got.iter().rev() {
        w.ack(r.id);
    }
    assert_eq!(wal_files(d.path(), "wal").len(), 1);
    assert!(wal_files(d.path(), "ack").is_empty());
    assert_eq!(w.usage().0, 0);
}

#[test]
fn a_second_process_cannot_share_the_directory() {
    let d = tempfile::tempdir().expect("tempdir");
    let (_w, _) = Wal::open(d.path(), 1 << 20).expect("open");
    let Err(e) = Wal::open(d.path(), 1 << 20) else {
        panic!("a second open succeeded");
    };
    assert!(e.to_string().contains("in use"), "{e}");
}
