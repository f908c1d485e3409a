//! The ACL bindings arranged for the per-request decision: built once for
//! each metadata version that shards are handed, then only borrowed. A
//! literal name is one hash lookup by `&str`; prefixed patterns are kept
//! by prefix with the set of their lengths, so the prefixes of a name are
//! looked up as slices of it. Nothing in `authorize` allocates.

use std::collections::HashMap;
use std::net::IpAddr;

use replication::controller::AclRecord;

use super::{pattern, permission, Operation, ResourceType, Settings, WILDCARD, WILDCARD_PRINCIPAL};

#[derive(Debug, Clone)]
enum Who {
    Anyone,
    One(Box<str>),
}

#[derive(Debug, Clone)]
enum Host {
    Any,
    Ip(IpAddr),
    /// Not an address: no client connects from it.
    Never,
}

#[derive(Debug, Clone)]
struct Entry {
    who: Who,
    host: Host,
    operation: Operation,
    allow: bool,
}

impl Entry {
    fn applies_to(&self, principal: &str, host: Option<IpAddr>) -> bool {
        let who = match &self.who {
            Who::Anyone => true,
            Who::One(p) => **p == *principal,
        };
        let host = match self.host {
            Host::Any => true,
            Host::Ip(ip) => host == Some(ip),
            Host::Never => false,
        };
        who && host
    }
}

#[derive(Debug, Clone, Default)]
struct PerType {
    literal: HashMap<Box<str>, Vec<Entry>>,
    /// The literal name `*`: every resource of the type.
    wildcard: Vec<Entry>,
    prefixed: HashMap<Box<str>, Vec<Entry>>,
    /// Distinct lengths of the prefixes, ascending.
    prefix_lengths: Vec<usize>,
}

impl PerType {
    /// Every entry whose resource pattern matches `name`.
    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let prefixed = self
            .prefix_lengths
            .iter()
            .take_while(move |&&len| len <= name.len())
            .filter_map(move |&len| name.get(..len))
            .filter_map(move |prefix| self.prefixed.get(prefix))
            .flatten();
        self.literal
            .get(name)
            .into_iter()
            .flatten()
            .chain(self.wildcard.iter())
            .chain(prefixed)
    }
}

#[derive(Debug, Clone, Default)]
pub struct AclIndex {
    types: [PerType; 4],
}

impl AclIndex {
    /// Arranges valid bindings; a stored binding this broker cannot read
    /// (a type it does not know) is left out, so it grants nothing.
    pub fn build<'a>(acls: impl IntoIterator<Item = &'a AclRecord>) -> AclIndex {
        let mut index = AclIndex::default();
        for acl in acls {
            let (Some(rt), Some(operation)) = (
                ResourceType::from_code(acl.resource_type),
                Operation::from_code(acl.operation),
            ) else {
                continue;
            };
            let allow = match acl.permission {
                permission::ALLOW => true,
                permission::DENY => false,
                _ => continue,
            };
            let entry = Entry {
                who: if acl.principal == WILDCARD_PRINCIPAL {
                    Who::Anyone
                } else {
                    Who::One(acl.principal.as_str().into())
                },
                host: if acl.host == WILDCARD {
                    Host::Any
                } else {
                    acl.host
                        .parse::<IpAddr>()
                        .map_or(Host::Never, |ip| Host::Ip(ip.to_canonical()))
                },
                operation,
                allow,
            };
            let t = &mut index.types[rt.slot()];
            let name = acl.resource_name.as_str();
            match acl.pattern_type {
                pattern::LITERAL if name == WILDCARD => t.wildcard.push(entry),
                pattern::LITERAL => t.literal.entry(name.into()).or_default().push(entry),
                pattern::PREFIXED => {
                    t.prefixed.entry(name.into()).or_default().push(entry);
                    if let Err(at) = t.prefix_lengths.binary_search(&name.len()) {
                        t.prefix_lengths.insert(at, name.len());
                    }
                }
                _ => {}
            }
        }
        index
    }

    /// Kafka's decision: super users may do anything; a resource no ACL
    /// matches is allowed only with `allow_everyone_if_no_acl_found`; a
    /// matching DENY (of the operation or All) wins over any ALLOW; else
    /// an ALLOW of the operation, of All, or of one implying it is needed.
    pub fn authorize(
        &self,
        settings: &Settings,
        principal: &str,
        host: Option<IpAddr>,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if !settings.enabled || settings.is_super_user(principal) {
            return true;
        }
        let host = host.map(|h| h.to_canonical());
        let mut any = false;
        let mut allowed = false;
        for entry in self.types[resource.slot()].matching(name) {
            any = true;
            if !entry.applies_to(principal, host) {
                continue;
            }
            if entry.allow {
                allowed |= operation.allowed_by(entry.operation);
            } else if entry.operation == operation || entry.operation == Operation::All {
                return false;
            }
        }
        if !any {
            return settings.allow_everyone_if_no_acl_found;
        }
        allowed
    }

    /// Kafka's `authorizeByResourceType`, simplified to what it decides in
    /// practice: whether the principal may perform `operation` on some
    /// resource of the type (an ALLOW of it that applies, unless a DENY
    /// covers every resource of the type).
    pub fn may_on_some(
        &self,
        settings: &Settings,
        principal: &str,
        host: Option<IpAddr>,
        operation: Operation,
        resource: ResourceType,
    ) -> bool {
        if !settings.enabled || settings.is_super_user(principal) {
            return true;
        }
        let host = host.map(|h| h.to_canonical());
        let t = &self.types[resource.slot()];
        let applies = |e: &&Entry| e.applies_to(principal, host);
        let denied_everywhere = t
            .wildcard
            .iter()
            .filter(applies)
            .any(|e| !e.allow && (e.operation == operation || e.operation == Operation::All));
        if denied_everywhere {
            return false;
        }
        let mut entries = t
            .literal
            .values()
            .chain(t.prefixed.values())
            .flatten()
            .chain(t.wildcard.iter())
            .peekable();
        if entries.peek().is_none() {
            return settings.allow_everyone_if_no_acl_found;
        }
        entries
            .filter(applies)
            .any(|e| e.allow && operation.allowed_by(e.operation))
    }

    /// KIP-430's bitfield: bit `code` set for each operation applicable to
    /// the resource type that the principal may perform.
    pub fn authorized_operations(
        &self,
        settings: &Settings,
        principal: &str,
        host: Option<IpAddr>,
        resource: ResourceType,
        name: &str,
    ) -> i32 {
        Operation::applicable(resource)
            .iter()
            .filter(|&&op| self.authorize(settings, principal, host, op, resource, name))
            .fold(0, |bits, &op| bits | (1 << op as i32))
    }
}
