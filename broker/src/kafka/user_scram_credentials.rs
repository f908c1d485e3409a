//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! SCRAM credentials kept in the controller's metadata, so every node
//! authenticates against the same ones and they survive restarts. The
//! client sends a salted password; only the keys derived from it are
//! stored. Describe shows mechanisms and iterations, never key material.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use replication::controller::SubmitError;
use replication::controller::{Command, ScramRecord};

use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::Operation;
use crate::node::Node;
use crate::peers::Peers;
use crate::security::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};

pub async fn describe(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeUserScramCredentialsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut response = DescribeUserScramCredentialsResponse::default();
    // As Kafka: Describe on the cluster.
    if !super::authz::cluster(shard, &meta, frame, Operation::Describe) {
        response.error_code = Kafka::ClusterAuthorizationFailed.code();
        response.error_message = Some(str_bytes(Kafka::ClusterAuthorizationFailed.to_string()));
        return respond(frame, &response);
    }
    // Null or empty: every user, as Kafka reads it.
    let asked: Vec<String> = match &request.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => meta.scram_credentials.keys().cloned().collect(),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for user in &asked {
        *counts.entry(user.as_str()).or_default() += 1;
    }
    let mut answered: Vec<&str> = Vec::new();
    for user in &asked {
        if answered.contains(&user.as_str()) {
            continue;
        }
        answered.push(user);
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = str_bytes(user.clone());
        if counts[user.as_str()] > 1 {
            result.error_code = Kafka::DuplicateResource.code();
            result.error_message = Some(str_bytes(
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            ));
        } else {
            match meta.scram_credentials.get(user) {
                Some(credentials) if !credentials.is_empty() => {
                    result.credential_infos = credentials
                        .iter()
                        .map(|c| {
                            let mut info = CredentialInfo::default();
                            info.mechanism = c.mechanism;
                            info.iterations = c.iterations as i32;
                            info
                        })
                        .collect();
                }
                _ => {
                    result.error_code = Kafka::ResourceNotFound.code();
                    result.error_message = Some(str_bytes(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    )));
                }
            }
        }
        response.results.push(result);
    }
    respond(frame, &response)
}

/// One change asked for: (user, mechanism type, the new credential or
/// `None` to delete).
type Change = (String, i8, Option<(i32, Vec<u8>, Vec<u8>)>);

pub async fn alter(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: AlterUserScramCredentialsRequest,
) -> Result<Reply, HandlerError> {
    let mut changes: Vec<Change> = Vec::new();
    for d in &request.deletions {
        changes.push((d.name.to_string(), d.mechanism, None));
    }
    for u in &request.upsertions {
        changes.push((
            u.name.to_string(),
            u.mechanism,
            Some((u.iterations, u.salt.to_vec(), u.salted_password.to_vec())),
        ));
    }
    // One result per user, in the order users first appear; the first
    // failure of a user's changes is its answer, and a user's changes are
    // one controller command, applied all or none.
    let mut users: Vec<String> = Vec::new();
    for (user, _, _) in &changes {
        if !users.contains(user) {
            users.push(user.clone());
        }
    }
    let meta = shard.metadata();
    let mut response = AlterUserScramCredentialsResponse::default();
    // As Kafka: Alter on the cluster, else every user's change is refused.
    let allowed = super::authz::cluster(shard, &meta, frame, Operation::Alter);
    for user in users {
        if !allowed {
            let mut result = AlterUserScramCredentialsResult::default();
            result.user = str_bytes(user);
            result.error_code = Kafka::ClusterAuthorizationFailed.code();
            result.error_message = Some(str_bytes(Kafka::ClusterAuthorizationFailed.to_string()));
            response.results.push(result);
            continue;
        }
        let mine: Vec<&Change> = changes.iter().filter(|c| c.0 == user).collect();
        let stored: Vec<i8> = meta
            .scram_credentials
            .get(&user)
            .map(|c| c.iter().map(|c| c.mechanism).collect())
            .unwrap_or_default();
        let outcome = match check(&user, &mine, &stored) {
            Err(e) => Err(e),
            Ok(command) => apply(shard, command).await,
        };
        let mut result = AlterUserScramCredentialsResult::default();
        result.user = str_bytes(user);
        if let Err((code, message)) = outcome {
            result.error_code = code.code();
            result.error_message = Some(str_bytes(message));
        }
        response.results.push(result);
    }
    respond(frame, &response)
}

fn check(user: &str, changes: &[&Change], stored: &[i8]) -> Result<Command, (Kafka, String)> {
    if user.is_empty() {
        return Err((
            Kafka::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    let mut seen: Vec<i8> = Vec::new();
    let mut deletions = Vec::new();
    let mut upsertions = Vec::new();
    for (_, mechanism_type, change) in changes {
        let Some(mechanism) = Mechanism::from_kafka_type(*mechanism_type) else {
            return Err((
                Kafka::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism type {mechanism_type}"),
            ));
        };
        if seen.contains(mechanism_type) {
            return Err((
                Kafka::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            ));
        }
        seen.push(*mechanism_type);
        let Some((iterations, salt, salted_password)) = change else {
            if !stored.contains(mechanism_type) {
                return Err((
                    Kafka::ResourceNotFound,
                    format!("Attempt to delete a user credential that does not exist: {user}"),
                ));
            }
            deletions.push(*mechanism_type);
            continue;
        };
        let iterations = u32::try_from(*iterations).unwrap_or(0);
        if iterations < ITERATIONS_MIN {
            return Err((
                Kafka::UnacceptableCredential,
                format!("Too few iterations: {iterations} is below {ITERATIONS_MIN}"),
            ));
        }
        if iterations > ITERATIONS_MAX {
            return Err((
                Kafka::UnacceptableCredential,
                format!("Too many iterations: {iterations} is above {ITERATIONS_MAX}"),
            ));
        }
        if salt.is_empty() || salted_password.is_empty() {
            return Err((
                Kafka::UnacceptableCredential,
                "The salt and the salted password must not be empty".into(),
            ));
        }
        let credential = ScramCredential::from_salted_password(
            mechanism,
            salt.clone(),
            iterations,
            salted_password,
        );
        upsertions.push(record(mechanism, credential));
    }
    Ok(Command::AlterScramCredentials {
        user: user.to_string(),
        deletions,
        upsertions,
    })
}

pub(crate) fn record(mechanism: Mechanism, c: ScramCredential) -> ScramRecord {
    ScramRecord {
        mechanism: mechanism.kafka_type(),
        salt: c.salt,
        iterations: c.iterations,
        stored_key: c.stored_key,
        server_key: c.server_key,
    }
}

/// Proposes one user's changes, all or none.
async fn apply(shard: &Rc<Node>, command: Command) -> Result<(), (Kafka, String)> {
    match shard.submit(command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(replication::controller::MetadataError::UnknownScramCredential {
            user, ..
        })) => Err((
            Kafka::ResourceNotFound,
            format!("Attempt to delete a user credential that does not exist: {user}"),
        )),
        Ok(Err(e)) => Err((Kafka::UnknownServerError, e.to_string())),
        // The change may or may not have been applied.
        Err(e @ SubmitError::Unknown { .. }) => Err((Kafka::RequestTimedOut, e.to_string())),
        Err(e) => Err((Kafka::NotController, e.to_string())),
    }
}
