//! Unit tests of the ACL model: Kafka's matching, implied operations,
//! deny-over-allow, super users, hosts, validation and filters.

use std::net::IpAddr;

use replication::controller::AclRecord;

use super::*;

fn acl(rt: ResourceType, name: &str, pt: i8, who: &str, op: Operation, perm: i8) -> AclRecord {
    AclRecord {
        resource_type: rt as i8,
        resource_name: name.into(),
        pattern_type: pt,
        principal: who.into(),
        host: "*".into(),
        operation: op as i8,
        permission: perm,
    }
}

fn on() -> Settings {
    Settings {
        enabled: true,
        super_users: vec!["User:admin".into()],
        allow_everyone_if_no_acl_found: false,
    }
}

const HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)));
use pattern::{LITERAL, PREFIXED};
use permission::{ALLOW, DENY};
use Operation::*;
use ResourceType::*;

fn can(
    index: &AclIndex,
    s: &Settings,
    who: &str,
    op: Operation,
    rt: ResourceType,
    name: &str,
) -> bool {
    index.authorize(s, who, HOST, op, rt, name)
}

#[test]
fn prefixed_literal_and_wildcard_names_match_as_kafka() {
    let acls = [
        acl(Topic, "metrics.", PREFIXED, "User:writer", Write, ALLOW),
        acl(Topic, "billing", LITERAL, "User:reader", Read, ALLOW),
        acl(Group, "*", LITERAL, "User:reader", Read, ALLOW),
    ];
    let index = AclIndex::build(&acls);
    let s = on();
    assert!(can(&index, &s, "User:writer", Write, Topic, "metrics.cpu"));
    assert!(can(&index, &s, "User:writer", Write, Topic, "metrics."));
    assert!(!can(&index, &s, "User:writer", Write, Topic, "metrics"));
    assert!(!can(&index, &s, "User:writer", Write, Topic, "billing"));
    assert!(!can(&index, &s, "User:writer", Read, Topic, "metrics.cpu"));
    assert!(can(&index, &s, "User:reader", Read, Topic, "billing"));
    assert!(!can(&index, &s, "User:reader", Read, Topic, "billing2"));
    assert!(can(&index, &s, "User:reader", Read, Group, "any-group"));
    assert!(!can(&index, &s, "User:writer", Read, Group, "any-group"));
    // Types do not mix.
    assert!(!can(
        &index,
        &s,
        "User:reader",
        Read,
        TransactionalId,
        "billing"
    ));
}

#[test]
fn deny_wins_and_all_covers_every_operation() {
    let acls = [
        acl(Topic, "t", LITERAL, "User:*", All, ALLOW),
        acl(Topic, "t", PREFIXED, "User:bob", Write, DENY),
    ];
    let index = AclIndex::build(&acls);
    let s = on();
    for op in Operation::applicable(Topic) {
        assert!(can(&index, &s, "User:alice", *op, Topic, "t"), "{op:?}");
    }
    assert!(!can(&index, &s, "User:bob", Write, Topic, "t"));
    assert!(can(&index, &s, "User:bob", Read, Topic, "t"));
    let all_denied = AclIndex::build(&[
        acl(Topic, "t", LITERAL, "User:bob", Read, ALLOW),
        acl(Topic, "*", LITERAL, "User:*", All, DENY),
    ]);
    assert!(!can(&all_denied, &s, "User:bob", Read, Topic, "t"));
    // A deny implies nothing: denying Read leaves Describe allowed by Write.
    let deny_read = AclIndex::build(&[
        acl(Topic, "t", LITERAL, "User:bob", Write, ALLOW),
        acl(Topic, "t", LITERAL, "User:bob", Read, DENY),
    ]);
    assert!(can(&deny_read, &s, "User:bob", Describe, Topic, "t"));
    assert!(!can(&deny_read, &s, "User:bob", Read, Topic, "t"));
}

#[test]
fn implied_operations_follow_kafka() {
    let s = on();
    for granted in [Read, Write, Delete, Alter] {
        let index = AclIndex::build(&[acl(Topic, "t", LITERAL, "User:u", granted, ALLOW)]);
        assert!(
            can(&index, &s, "User:u", Describe, Topic, "t"),
            "{granted:?}"
        );
        assert!(!can(&index, &s, "User:u", DescribeConfigs, Topic, "t"));
    }
    for granted in [Create, DescribeConfigs, ClusterAction, IdempotentWrite] {
        let index = AclIndex::build(&[acl(Topic, "t", LITERAL, "User:u", granted, ALLOW)]);
        assert!(
            !can(&index, &s, "User:u", Describe, Topic, "t"),
            "{granted:?}"
        );
    }
    let index = AclIndex::build(&[acl(
        Cluster,
        CLUSTER_NAME,
        LITERAL,
        "User:u",
        AlterConfigs,
        ALLOW,
    )]);
    assert!(can(
        &index,
        &s,
        "User:u",
        DescribeConfigs,
        Cluster,
        CLUSTER_NAME
    ));
    assert!(!can(&index, &s, "User:u", Alter, Cluster, CLUSTER_NAME));
}

#[test]
fn super_users_no_acl_and_hosts() {
    let mut s = on();
    let empty = AclIndex::build(&[]);
    assert!(can(&empty, &s, "User:admin", Delete, Topic, "x"));
    assert!(!can(&empty, &s, "User:alice", Describe, Topic, "x"));
    s.allow_everyone_if_no_acl_found = true;
    assert!(can(&empty, &s, "User:alice", Describe, Topic, "x"));
    // An ACL on the resource for someone else: no longer "no ACL found".
    let other = AclIndex::build(&[acl(Topic, "x", LITERAL, "User:bob", Read, ALLOW)]);
    assert!(!can(&other, &s, "User:alice", Describe, Topic, "x"));
    assert!(can(&other, &s, "User:alice", Describe, Topic, "y"));
    let mut from_host = acl(Topic, "x", LITERAL, "User:alice", Read, ALLOW);
    from_host.host = "10.0.0.7".into();
    let mut elsewhere = acl(Topic, "y", LITERAL, "User:alice", Read, ALLOW);
    elsewhere.host = "10.0.0.8".into();
    let mut bad = acl(Topic, "z", LITERAL, "User:alice", Read, ALLOW);
    bad.host = "not-an-ip".into();
    let s = on();
    let hosts = AclIndex::build(&[from_host, elsewhere, bad]);
    assert!(can(&hosts, &s, "User:alice", Read, Topic, "x"));
    assert!(!can(&hosts, &s, "User:alice", Read, Topic, "y"));
    assert!(!can(&hosts, &s, "User:alice", Read, Topic, "z"));
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().expect("ip");
    assert!(hosts.authorize(&s, "User:alice", Some(mapped), Read, Topic, "x"));
    assert!(!hosts.authorize(&s, "User:alice", None, Read, Topic, "x"));
    let off = Settings::default();
    assert!(can(
        &empty,
        &off,
        "User:ANONYMOUS",
        Alter,
        Cluster,
        CLUSTER_NAME
    ));
}

#[test]
fn authorized_operations_are_the_kip_430_bits() {
    let s = on();
    let index = AclIndex::build(&[acl(Topic, "t", LITERAL, "User:u", Read, ALLOW)]);
    let bits = index.authorized_operations(&s, "User:u", HOST, Topic, "t");
    assert_eq!(bits, (1 << Read as i32) | (1 << Describe as i32));
    let all =
        AclIndex::default().authorized_operations(&Settings::default(), "User:u", HOST, Group, "g");
    assert_eq!(all, (1 << 3) | (1 << 6) | (1 << 8));
}

#[test]
fn new_bindings_are_validated_as_kafka_does() {
    let good = acl(Topic, "t", LITERAL, "User:u", Read, ALLOW);
    assert!(validate(&good).is_ok());
    let bad = |f: &dyn Fn(&mut AclRecord)| {
        let mut a = good.clone();
        f(&mut a);
        validate(&a).expect_err("refused")
    };
    bad(&|a| a.resource_type = resource_code::ANY);
    bad(&|a| a.resource_type = resource_code::DELEGATION_TOKEN);
    bad(&|a| a.resource_type = 42);
    bad(&|a| a.pattern_type = pattern::MATCH);
    bad(&|a| a.pattern_type = pattern::ANY);
    bad(&|a| a.operation = OPERATION_ANY);
    bad(&|a| a.operation = 13);
    bad(&|a| a.permission = permission::ANY);
    bad(&|a| a.resource_name.clear());
    bad(&|a| a.principal = "alice".into());
    bad(&|a| {
        a.resource_type = Cluster as i8;
        a.resource_name = "other".into();
    });
}

#[test]
fn filters_match_as_kafka_bindings_filters() {
    let lit = acl(Topic, "metrics.cpu", LITERAL, "User:u", Read, ALLOW);
    let pre = acl(Topic, "metrics.", PREFIXED, "User:u", Write, ALLOW);
    let star = acl(Topic, "*", LITERAL, "User:v", Read, DENY);
    let f = |pt: i8, name: Option<&str>| AclFilter {
        resource_type: resource_code::ANY,
        resource_name: name.map(String::from),
        pattern_type: pt,
        principal: None,
        host: None,
        operation: OPERATION_ANY,
        permission: permission::ANY,
    };
    let m = |filter: &AclFilter| [&lit, &pre, &star].map(|a| filter.matches(a));
    assert_eq!(m(&f(pattern::ANY, None)), [true, true, true]);
    assert_eq!(
        m(&f(pattern::MATCH, Some("metrics.cpu"))),
        [true, true, true]
    );
    assert_eq!(
        m(&f(pattern::ANY, Some("metrics.cpu"))),
        [true, false, false]
    );
    assert_eq!(m(&f(LITERAL, None)), [true, false, true]);
    assert_eq!(m(&f(PREFIXED, Some("metrics."))), [false, true, false]);
    let mut by_who = f(pattern::ANY, None);
    by_who.principal = Some("User:v".into());
    by_who.permission = DENY;
    assert_eq!(m(&by_who), [false, false, true]);
    let mut unknown = f(pattern::ANY, None);
    assert!(unknown.validate().is_ok());
    unknown.operation = 0;
    assert!(unknown.validate().is_err());
}

#[test]
fn super_users_parse_as_kafka_lists_them() {
    assert_eq!(
        Settings::parse_super_users("User:admin; User:ops;").expect("ok"),
        vec!["User:admin".to_string(), "User:ops".to_string()]
    );
    assert!(Settings::parse_super_users("admin").is_err());
}
