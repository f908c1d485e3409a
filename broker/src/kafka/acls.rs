//! CreateAcls, DescribeAcls and DeleteAcls: the ACL bindings kept in the
//! controller's metadata, so every node enforces the same ones from the
//! same metadata offset and they survive restarts. As Kafka: Describe on
//! the cluster to list, Alter to change, SECURITY_DISABLED when the
//! authorizer is off, INVALID_REQUEST for a bad binding or filter, one
//! result per creation and per filter.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use replication::controller::{AclRecord, Command, SubmitError};

use super::{authz, respond, str_bytes, HandlerError, Reply};
use crate::acl::{self, AclFilter, Operation};
use crate::node::Node;
use crate::peers::Peers;

const SECURITY_DISABLED: &str = "No Authorizer is configured on the broker";

fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> AclFilter {
    AclFilter {
        resource_type,
        resource_name: name.as_ref().map(|s| s.to_string()),
        pattern_type,
        principal: principal.as_ref().map(|s| s.to_string()),
        host: host.as_ref().map(|s| s.to_string()),
        operation,
        permission,
    }
}

pub async fn describe(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeAclsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut response = DescribeAclsResponse::default();
    let fail = |mut response: DescribeAclsResponse, code: Kafka, message: String| {
        response.error_code = code.code();
        response.error_message = Some(str_bytes(message));
        respond(frame, &response)
    };
    if !authz::cluster(shard, &meta, frame, Operation::Describe) {
        return fail(
            response,
            Kafka::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    if !shard.acl.enabled {
        return fail(response, Kafka::SecurityDisabled, SECURITY_DISABLED.into());
    }
    let f = filter(
        request.resource_type_filter,
        &request.resource_name_filter,
        request.pattern_type_filter,
        &request.principal_filter,
        &request.host_filter,
        request.operation,
        request.permission_type,
    );
    if let Err(e) = f.validate() {
        return fail(response, Kafka::InvalidRequest, e);
    }
    // The stored set is ordered by resource first: consecutive bindings of
    // one resource make one entry.
    for a in meta.acls.iter().filter(|a| f.matches(a)) {
        let same = response.resources.last().is_some_and(|r| {
            r.resource_type == a.resource_type
                && r.pattern_type == a.pattern_type
                && r.resource_name.as_str() == a.resource_name
        });
        if !same {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = a.resource_type;
            resource.resource_name = str_bytes(a.resource_name.clone());
            resource.pattern_type = a.pattern_type;
            response.resources.push(resource);
        }
        let mut d = AclDescription::default();
        d.principal = str_bytes(a.principal.clone());
        d.host = str_bytes(a.host.clone());
        d.operation = a.operation;
        d.permission_type = a.permission;
        if let Some(r) = response.resources.last_mut() {
            r.acls.push(d);
        }
    }
    respond(frame, &response)
}

pub async fn create(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: CreateAclsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let refused = if !authz::cluster(shard, &meta, frame, Operation::Alter) {
        Some((
            Kafka::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ))
    } else if !shard.acl.enabled {
        Some((Kafka::SecurityDisabled, SECURITY_DISABLED))
    } else {
        None
    };
    // Per creation: `None` when accepted, else the error.
    let mut results: Vec<Option<(Kafka, String)>> = Vec::new();
    let mut valid: Vec<AclRecord> = Vec::new();
    for c in &request.creations {
        if let Some((code, message)) = refused {
            results.push(Some((code, message.into())));
            continue;
        }
        let record = AclRecord {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        };
        match acl::validate(&record) {
            Ok(()) => {
                valid.push(record);
                results.push(None);
            }
            Err(e) => results.push(Some((Kafka::InvalidRequest, e))),
        }
    }
    if !valid.is_empty() {
        if let Err((code, message)) = submit(shard, Command::CreateAcls { acls: valid }).await {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some((code, message.clone()));
            }
        }
    }
    let mut response = CreateAclsResponse::default();
    response.results = results
        .into_iter()
        .map(|error| {
            let mut r = AclCreationResult::default();
            if let Some((code, message)) = error {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
            }
            r
        })
        .collect();
    respond(frame, &response)
}

pub async fn delete(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DeleteAclsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let refused = if !authz::cluster(shard, &meta, frame, Operation::Alter) {
        Some((
            Kafka::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ))
    } else if !shard.acl.enabled {
        Some((Kafka::SecurityDisabled, SECURITY_DISABLED))
    } else {
        None
    };
    // Per filter: its error, or the bindings it matched.
    let mut outcomes: Vec<Result<Vec<&AclRecord>, (Kafka, String)>> = Vec::new();
    for f in &request.filters {
        if let Some((code, message)) = refused {
            outcomes.push(Err((code, message.into())));
            continue;
        }
        let f = delete_filter(f);
        match f.validate() {
            Ok(()) => outcomes.push(Ok(meta.acls.iter().filter(|a| f.matches(a)).collect())),
            Err(e) => outcomes.push(Err((Kafka::InvalidRequest, e))),
        }
    }
    let doomed: BTreeSet<&AclRecord> = outcomes.iter().flatten().flatten().copied().collect();
    if !doomed.is_empty() {
        let acls = doomed.into_iter().cloned().collect();
        if let Err(e) = submit(shard, Command::DeleteAcls { acls }).await {
            for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                *o = Err(e.clone());
            }
        }
    }
    let mut response = DeleteAclsResponse::default();
    for outcome in outcomes {
        let mut r = DeleteAclsFilterResult::default();
        match outcome {
            Err((code, message)) => {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(message));
            }
            Ok(matched) => {
                r.matching_acls = matched.into_iter().map(matching).collect();
            }
        }
        response.filter_results.push(r);
    }
    respond(frame, &response)
}

fn delete_filter(f: &DeleteAclsFilter) -> AclFilter {
    filter(
        f.resource_type_filter,
        &f.resource_name_filter,
        f.pattern_type_filter,
        &f.principal_filter,
        &f.host_filter,
        f.operation,
        f.permission_type,
    )
}

fn matching(a: &AclRecord) -> DeleteAclsMatchingAcl {
    let mut m = DeleteAclsMatchingAcl::default();
    m.resource_type = a.resource_type;
    m.resource_name = str_bytes(a.resource_name.clone());
    m.pattern_type = a.pattern_type;
    m.principal = str_bytes(a.principal.clone());
    m.host = str_bytes(a.host.clone());
    m.operation = a.operation;
    m.permission_type = a.permission;
    m
}

async fn submit(shard: &Rc<Node>, command: Command) -> Result<(), (Kafka, String)> {
    match shard.submit(command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err((Kafka::UnknownServerError, e.to_string())),
        // The change may or may not have been applied.
        Err(e @ SubmitError::Unknown { .. }) => Err((Kafka::RequestTimedOut, e.to_string())),
        Err(e) => Err((Kafka::NotController, e.to_string())),
    }
}
