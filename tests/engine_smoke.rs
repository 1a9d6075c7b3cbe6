use walmdb::{Config, Db};

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut t = db.write().unwrap();
    t.put("users", b"alice", b"1").unwrap();
    t.put("users", b"bob", b"2").unwrap();
    assert_eq!(t.get("users", b"alice").unwrap(), Some(&b"1"[..]));
    let lsn = t.commit().unwrap();
    assert!(lsn >= 1);
    let r = db.read().unwrap();
    assert_eq!(r.get("users", b"alice").unwrap(), Some(&b"1"[..]));
    let all: Vec<_> = r.range("users", ..).unwrap().map(|x| x.unwrap()).collect();
    assert_eq!(all.len(), 2);
    drop(r);
    db.checkpoint().unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.get("users", b"bob").unwrap(), Some(&b"2"[..]));
    drop(r);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), Config::default()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0);
    let r = db.read().unwrap();
    assert_eq!(r.get("users", b"bob").unwrap(), Some(&b"2"[..]));
    assert_eq!(db.tables(), vec!["users".to_string()]);
}
