//! Passwords that passed a check, remembered per shard so that a sender
//! authenticating every request (a Prometheus remote-write, many a
//! second) costs a keyed hash rather than a PBKDF2 derivation of
//! milliseconds. An entry holds a keyed hash of the password, never the
//! password, and the credential it was checked against: once the metadata
//! holds another credential for the user (changed, or deleted) the entry
//! no longer matches and is dropped. Only successes are remembered, and
//! at most `entries_max` users.

use std::cell::RefCell;
use std::collections::HashMap;

use ring::hmac;

use super::scram::{Mechanism, ScramCredential};

pub struct CredentialCache {
    /// Random per cache: the hashes mean nothing outside this process.
    key: hmac::Key,
    entries: RefCell<HashMap<String, Entry>>,
    entries_max: usize,
}

struct Entry {
    mechanism: Mechanism,
    credential: ScramCredential,
    password_tag: hmac::Tag,
}

impl CredentialCache {
    pub fn new(entries_max: usize) -> CredentialCache {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the operating system provides random bytes");
        CredentialCache {
            key,
            entries: RefCell::new(HashMap::new()),
            entries_max: entries_max.max(1),
        }
    }

    /// Whether `password` passed a check for `user` against `current`, the
    /// credential the metadata holds for the user now (`None`: no
    /// credential). An entry checked against another credential is dropped.
    pub fn hit(
        &self,
        user: &str,
        password: &[u8],
        current: Option<&(Mechanism, ScramCredential)>,
    ) -> bool {
        let mut entries = self.entries.borrow_mut();
        let Some(entry) = entries.get(user) else {
            return false;
        };
        let same = current.is_some_and(|(mechanism, credential)| {
            entry.mechanism == *mechanism && entry.credential == *credential
        });
        if !same {
            entries.remove(user);
            return false;
        }
        // A wrong password leaves the entry alone: failures must not evict
        // what a legitimate sender relies on.
        hmac::verify(&self.key, password, entry.password_tag.as_ref()).is_ok()
    }

    /// Remembers that `password` passed a check for `user` against
    /// `checked`. When full, an arbitrary entry makes room.
    pub fn insert(&self, user: &str, password: &[u8], checked: (Mechanism, ScramCredential)) {
        let mut entries = self.entries.borrow_mut();
        if !entries.contains_key(user) && entries.len() >= self.entries_max {
            if let Some(evicted) = entries.keys().next().cloned() {
                entries.remove(&evicted);
            }
        }
        let (mechanism, credential) = checked;
        entries.insert(
            user.to_string(),
            Entry {
                mechanism,
                credential,
                password_tag: hmac::sign(&self.key, password),
            },
        );
        debug_assert!(entries.len() <= self.entries_max);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(password: &str) -> (Mechanism, ScramCredential) {
        (
            Mechanism::Sha256,
            ScramCredential::from_password(
                Mechanism::Sha256,
                password.as_bytes(),
                vec![7; 16],
                4096,
            ),
        )
    }

    #[test]
    fn a_checked_password_hits_until_the_credential_changes() {
        let cache = CredentialCache::new(8);
        let old = credential("secret");
        assert!(!cache.hit("alice", b"secret", Some(&old)), "empty");
        cache.insert("alice", b"secret", old.clone());
        assert!(cache.hit("alice", b"secret", Some(&old)));
        assert!(!cache.hit("alice", b"Secret", Some(&old)), "wrong password");
        assert!(!cache.hit("bob", b"secret", Some(&old)), "another user");
        assert_eq!(cache.len(), 1, "a wrong password does not evict");
        // The password changed: the old one must not pass from the cache.
        let new = credential("changed");
        assert!(!cache.hit("alice", b"secret", Some(&new)));
        assert!(cache.is_empty(), "the stale entry is dropped");
        cache.insert("alice", b"changed", new.clone());
        assert!(cache.hit("alice", b"changed", Some(&new)));
        // Same password, new salt (set again): another credential too.
        let mut salted = new.clone();
        salted.1.salt = vec![8; 16];
        assert!(!cache.hit("alice", b"changed", Some(&salted)));
        // Deleted.
        cache.insert("alice", b"changed", new.clone());
        assert!(!cache.hit("alice", b"changed", None));
        assert!(cache.is_empty());
        // Another mechanism now decides, with the same bytes.
        cache.insert("alice", b"changed", new.clone());
        let other = (Mechanism::Sha512, new.1.clone());
        assert!(!cache.hit("alice", b"changed", Some(&other)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = CredentialCache::new(3);
        let c = credential("p");
        for i in 0..10 {
            cache.insert(&format!("user{i}"), b"p", c.clone());
            assert!(cache.len() <= 3);
        }
        assert!(cache.hit("user9", b"p", Some(&c)), "the newest stays");
        cache.insert("user9", b"p", c.clone());
        assert_eq!(cache.len(), 3, "a user is one entry");
    }
}
