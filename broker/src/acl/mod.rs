//! Authorization with Kafka's ACL semantics: the model (resource types,
//! pattern types, operations, permissions, bindings and the filters of
//! DescribeAcls/DeleteAcls), validation of new bindings, and the index
//! (`index`) that answers "may this principal do this?" without
//! allocating. Pure: no I/O, no clock.

mod index;

use replication::controller::AclRecord;

pub use index::AclIndex;

/// The name of the one Cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name matching every resource of its type, and the
/// principal and host matching everyone.
pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Kafka's `ResourceType` codes, those an ACL can name here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ];

    pub fn from_code(code: i8) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| *t as i8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
            ResourceType::Cluster => "Cluster",
            ResourceType::TransactionalId => "TransactionalId",
        }
    }

    /// Slot in per-type arrays.
    fn slot(self) -> usize {
        self as usize - 2
    }
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// Kafka's `ResourceType` codes that are not resources here.
pub mod resource_code {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// Kafka's `AclOperation` codes, those an ACL can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

/// `AclOperation.ANY`, in filters only.
pub const OPERATION_ANY: i8 = 1;

impl Operation {
    pub const EVERY: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    pub fn from_code(code: i8) -> Option<Operation> {
        Operation::EVERY.into_iter().find(|o| *o as i8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "All",
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Create => "Create",
            Operation::Delete => "Delete",
            Operation::Alter => "Alter",
            Operation::Describe => "Describe",
            Operation::ClusterAction => "ClusterAction",
            Operation::DescribeConfigs => "DescribeConfigs",
            Operation::AlterConfigs => "AlterConfigs",
            Operation::IdempotentWrite => "IdempotentWrite",
        }
    }

    /// Whether an ALLOW of `granted` allows `self`: `All` allows all,
    /// Read, Write, Delete and Alter imply Describe, AlterConfigs implies
    /// DescribeConfigs (Kafka's implied operations; a DENY implies none).
    fn allowed_by(self, granted: Operation) -> bool {
        granted == self
            || granted == Operation::All
            || (self == Operation::Describe
                && matches!(
                    granted,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (self == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
    }

    /// The operations that apply to a resource type, in Kafka's order, as
    /// KIP-430 reports them.
    pub fn applicable(resource: ResourceType) -> &'static [Operation] {
        use Operation::*;
        match resource {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Delete, Describe],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
        }
    }
}

/// Why a binding cannot be created (Kafka answers INVALID_REQUEST).
pub fn validate(acl: &AclRecord) -> Result<(), String> {
    match acl.resource_type {
        resource_code::DELEGATION_TOKEN | resource_code::USER => {
            return Err(format!(
                "ACLs on resource type {} are not supported",
                acl.resource_type
            ))
        }
        code if ResourceType::from_code(code).is_none() => {
            return Err(format!("Invalid resourceType {code}"))
        }
        _ => {}
    }
    if acl.pattern_type != pattern::LITERAL && acl.pattern_type != pattern::PREFIXED {
        return Err(format!("Invalid patternType {}", acl.pattern_type));
    }
    if Operation::from_code(acl.operation).is_none() {
        return Err(format!("Invalid operation {}", acl.operation));
    }
    if acl.permission != permission::ALLOW && acl.permission != permission::DENY {
        return Err(format!("Invalid permissionType {}", acl.permission));
    }
    if acl.resource_name.is_empty() {
        return Err("Resource name should not be empty".into());
    }
    if acl.resource_type == ResourceType::Cluster as i8 && acl.resource_name != CLUSTER_NAME {
        return Err(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    if acl.pattern_type == pattern::PREFIXED && acl.resource_name == WILDCARD {
        return Err("The wildcard '*' is only valid as a LITERAL resource name".into());
    }
    match acl.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return Err(format!("Could not parse principal {:?}", acl.principal)),
    }
    if acl.host.is_empty() {
        return Err("Host should not be empty".into());
    }
    Ok(())
}

/// A DescribeAcls/DeleteAcls filter; `None` strings match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Kafka refuses filters with UNKNOWN values (INVALID_REQUEST).
    pub fn validate(&self) -> Result<(), String> {
        let resource_ok = self.resource_type == resource_code::ANY
            || ResourceType::from_code(self.resource_type).is_some()
            || self.resource_type == resource_code::DELEGATION_TOKEN
            || self.resource_type == resource_code::USER;
        if !resource_ok {
            return Err(format!("Invalid resourceType {}", self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Err(format!("Invalid patternType {}", self.pattern_type));
        }
        if self.operation != OPERATION_ANY && Operation::from_code(self.operation).is_none() {
            return Err(format!("Invalid operation {}", self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return Err(format!("Invalid permissionType {}", self.permission));
        }
        Ok(())
    }

    /// Kafka's `AclBindingFilter.matches`: ANY matches every value; MATCH
    /// matches the bindings that would apply to the named resource.
    pub fn matches(&self, acl: &AclRecord) -> bool {
        if self.resource_type != resource_code::ANY && self.resource_type != acl.resource_type {
            return false;
        }
        if self.pattern_type != pattern::ANY
            && self.pattern_type != pattern::MATCH
            && self.pattern_type != acl.pattern_type
        {
            return false;
        }
        let name_ok = match &self.resource_name {
            None => true,
            Some(name) if self.pattern_type != pattern::MATCH => *name == acl.resource_name,
            Some(name) => match acl.pattern_type {
                pattern::LITERAL => *name == acl.resource_name || acl.resource_name == WILDCARD,
                pattern::PREFIXED => name.starts_with(acl.resource_name.as_str()),
                _ => false,
            },
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == OPERATION_ANY || self.operation == acl.operation)
            && (self.permission == permission::ANY || self.permission == acl.permission)
    }
}

/// The authorizer's settings (`authorizer`, `super_users`,
/// `allow_everyone_if_no_acl_found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// Principals (`User:NAME`) allowed everything.
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl Settings {
    /// Parses `super_users` as Kafka writes it: `User:a;User:b`.
    pub fn parse_super_users(text: &str) -> Result<Vec<String>, String> {
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(s.to_string()),
                _ => Err(format!("{s:?} is not a principal of the form User:NAME")),
            })
            .collect()
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }
}

#[cfg(test)]
mod tests;
