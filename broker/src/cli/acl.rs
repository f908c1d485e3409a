//! `sluice acl`: add, list and remove ACL bindings (CreateAcls,
//! DescribeAcls, DeleteAcls) through librdkafka's admin C API, which the
//! rdkafka crate does not wrap. Works against any Kafka-compatible broker
//! with an authorizer.

use std::ffi::CString;
use std::os::raw::c_char;

use anyhow::{anyhow, bail, Context};
use rdkafka::bindings as b;
use serde_json::{json, Value};

use super::client::{text, Common};
use super::output::{emit, emit_message, table};
use super::user::{call, UserError};

#[derive(clap::Args, Debug)]
pub struct AclArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: AclCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AclCommand {
    /// Add a binding: e.g. `--allow --principal User:alice --operation
    /// Write --topic metrics. --prefixed`.
    Add(Binding),
    /// Bindings, all or those of a principal and/or a resource (a
    /// resource lists the bindings that apply to it, as Kafka's MATCH).
    List(Filter),
    /// Remove the binding described exactly as it was added.
    Remove(Binding),
}

#[derive(clap::Args, Debug)]
struct Resource {
    #[arg(long, group = "resource")]
    topic: Option<String>,
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster (Kafka's `kafka-cluster`).
    #[arg(long, group = "resource")]
    cluster: bool,
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// The name is a prefix (Kafka's PREFIXED pattern), not a literal.
    #[arg(long)]
    prefixed: bool,
}

impl Resource {
    fn get(&self) -> Option<(b::rd_kafka_ResourceType_t, &str)> {
        use b::rd_kafka_ResourceType_t as T;
        match self {
            Resource { topic: Some(t), .. } => Some((T::RD_KAFKA_RESOURCE_TOPIC, t)),
            Resource { group: Some(g), .. } => Some((T::RD_KAFKA_RESOURCE_GROUP, g)),
            Resource { cluster: true, .. } => Some((T::RD_KAFKA_RESOURCE_BROKER, "kafka-cluster")),
            Resource {
                transactional_id: Some(x),
                ..
            } => Some((T::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID, x)),
            _ => None,
        }
    }

    fn pattern(&self) -> b::rd_kafka_ResourcePatternType_t {
        if self.prefixed {
            b::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED
        } else {
            b::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL
        }
    }
}

#[derive(clap::Args, Debug)]
struct Binding {
    #[arg(long, group = "permission", required = true)]
    allow: bool,
    #[arg(long, group = "permission", required = true)]
    deny: bool,
    /// `User:NAME`, or `User:*` for everyone.
    #[arg(long)]
    principal: String,
    /// The client address the binding applies to.
    #[arg(long, default_value = "*")]
    host: String,
    #[arg(long, value_enum, ignore_case = true)]
    operation: Operation,
    #[command(flatten)]
    resource: Resource,
}

#[derive(clap::Args, Debug)]
struct Filter {
    #[arg(long)]
    principal: Option<String>,
    #[command(flatten)]
    resource: Resource,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    fn native(self) -> b::rd_kafka_AclOperation_t {
        use b::rd_kafka_AclOperation_t as O;
        match self {
            Operation::All => O::RD_KAFKA_ACL_OPERATION_ALL,
            Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Create => O::RD_KAFKA_ACL_OPERATION_CREATE,
            Operation::Delete => O::RD_KAFKA_ACL_OPERATION_DELETE,
            Operation::Alter => O::RD_KAFKA_ACL_OPERATION_ALTER,
            Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::ClusterAction => O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
            Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
            Operation::AlterConfigs => O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
            Operation::IdempotentWrite => O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        }
    }
}

pub fn run(args: AclArgs) -> anyhow::Result<()> {
    let c = &args.common;
    match args.command {
        AclCommand::Add(binding) => add(c, &binding),
        AclCommand::List(filter) => list(c, &filter),
        AclCommand::Remove(binding) => remove(c, &binding),
    }
}

fn c_str(s: &str) -> anyhow::Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{s:?} holds a NUL byte"))
}

fn optional(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Owns a binding or a filter (librdkafka's one type for both).
struct Acl(*mut b::rd_kafka_AclBinding_t);

impl Drop for Acl {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by an _new function, destroyed once.
            unsafe { b::rd_kafka_AclBinding_destroy(self.0) }
        }
    }
}

/// A binding (`filter` false) or the filter matching exactly it.
fn native(binding: &Binding, filter: bool) -> anyhow::Result<Acl> {
    let (rt, name) = binding.resource.get().ok_or_else(|| {
        anyhow!("name a resource: --topic, --group, --cluster or --transactional-id")
    })?;
    let (name, principal, host) = (
        c_str(name)?,
        c_str(&binding.principal)?,
        c_str(&binding.host)?,
    );
    let permission = if binding.allow {
        b::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
    } else {
        b::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY
    };
    let mut err = [0 as c_char; 512];
    let new = if filter {
        b::rd_kafka_AclBindingFilter_new
    } else {
        b::rd_kafka_AclBinding_new
    };
    // SAFETY: the strings outlive the call, which copies them.
    let acl = Acl(unsafe {
        new(
            rt,
            name.as_ptr(),
            binding.resource.pattern(),
            principal.as_ptr(),
            host.as_ptr(),
            binding.operation.native(),
            permission,
            err.as_mut_ptr(),
            err.len(),
        )
    });
    if acl.0.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message.
        bail!("invalid binding: {}", unsafe { text(err.as_ptr()) });
    }
    Ok(acl)
}

fn describe(acl: &Binding) -> String {
    let (_, name) = acl
        .resource
        .get()
        .unwrap_or((b::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_UNKNOWN, ""));
    format!(
        "{} {} {:?} on {name}{} from {}",
        if acl.allow { "ALLOW" } else { "DENY" },
        acl.principal,
        acl.operation,
        if acl.resource.prefixed { "*" } else { "" },
        acl.host
    )
}

fn add(c: &Common, binding: &Binding) -> anyhow::Result<()> {
    let acl = native(binding, false)?;
    let admin = c.admin()?;
    let mut acls = [acl.0];
    let event = call(
        admin.inner(),
        c,
        b::RD_KAFKA_EVENT_CREATEACLS_RESULT,
        |rk, o, q| {
            // SAFETY: the array and the binding outlive the call, which copies them.
            unsafe { b::rd_kafka_CreateAcls(rk, acls.as_mut_ptr(), acls.len(), o, q) }
        },
    )
    .context("creating the ACL")?;
    // SAFETY: the result lives as long as `event`; strings are copied.
    let failure = unsafe {
        let result = b::rd_kafka_event_CreateAcls_result(event.0);
        let mut n = 0usize;
        let results = b::rd_kafka_CreateAcls_result_acls(result, &mut n);
        if result.is_null() || n == 0 {
            bail!("no CreateAcls result in librdkafka's answer");
        }
        UserError::from_native(b::rd_kafka_acl_result_error(*results))
    };
    if let Some(e) = failure {
        bail!("{}: {}", e.name, e.message);
    }
    let what = describe(binding);
    emit_message(
        c.format,
        &json!({ "added": what }),
        &format!("Added {what}."),
    );
    Ok(())
}

fn remove(c: &Common, binding: &Binding) -> anyhow::Result<()> {
    let filter = native(binding, true)?;
    let admin = c.admin()?;
    let mut filters = [filter.0];
    let event = call(
        admin.inner(),
        c,
        b::RD_KAFKA_EVENT_DELETEACLS_RESULT,
        |rk, o, q| {
            // SAFETY: as in `add`.
            unsafe { b::rd_kafka_DeleteAcls(rk, filters.as_mut_ptr(), filters.len(), o, q) }
        },
    )
    .context("removing the ACL")?;
    // SAFETY: as in `add`.
    let removed = unsafe {
        let result = b::rd_kafka_event_DeleteAcls_result(event.0);
        let mut n = 0usize;
        let responses = b::rd_kafka_DeleteAcls_result_responses(result, &mut n);
        if result.is_null() || n == 0 {
            bail!("no DeleteAcls result in librdkafka's answer");
        }
        let r = *responses;
        if let Some(e) = UserError::from_native(b::rd_kafka_DeleteAcls_result_response_error(r)) {
            bail!("{}: {}", e.name, e.message);
        }
        let mut matched = 0usize;
        b::rd_kafka_DeleteAcls_result_response_matching_acls(r, &mut matched);
        matched
    };
    let what = describe(binding);
    if removed == 0 {
        bail!("no such binding: {what}");
    }
    emit_message(
        c.format,
        &json!({ "removed": what }),
        &format!("Removed {what}."),
    );
    Ok(())
}

fn list(c: &Common, filter: &Filter) -> anyhow::Result<()> {
    use b::rd_kafka_ResourcePatternType_t as P;
    let (rt, name, pattern) = match filter.resource.get() {
        Some((rt, name)) => (rt, Some(c_str(name)?), P::RD_KAFKA_RESOURCE_PATTERN_MATCH),
        None => (
            b::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
            None,
            P::RD_KAFKA_RESOURCE_PATTERN_ANY,
        ),
    };
    let pattern = if filter.resource.prefixed {
        filter.resource.pattern()
    } else {
        pattern
    };
    let principal = filter.principal.as_deref().map(c_str).transpose()?;
    let mut err = [0 as c_char; 512];
    // SAFETY: as in `native`; null strings match anything.
    let acl = Acl(unsafe {
        b::rd_kafka_AclBindingFilter_new(
            rt,
            optional(&name),
            pattern,
            optional(&principal),
            std::ptr::null(),
            b::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            b::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            err.as_mut_ptr(),
            err.len(),
        )
    });
    if acl.0.is_null() {
        // SAFETY: librdkafka wrote a NUL-terminated message.
        bail!("invalid filter: {}", unsafe { text(err.as_ptr()) });
    }
    let admin = c.admin()?;
    let event = call(
        admin.inner(),
        c,
        b::RD_KAFKA_EVENT_DESCRIBEACLS_RESULT,
        |rk, o, q| {
            // SAFETY: the filter outlives the call, which copies it.
            unsafe { b::rd_kafka_DescribeAcls(rk, acl.0, o, q) }
        },
    )
    .context("listing ACLs")?;
    let mut rows: Vec<[String; 7]> = Vec::new();
    // SAFETY: as in `add`.
    unsafe {
        let result = b::rd_kafka_event_DescribeAcls_result(event.0);
        if result.is_null() {
            bail!("no DescribeAcls result in librdkafka's answer");
        }
        let mut n = 0usize;
        let acls = b::rd_kafka_DescribeAcls_result_acls(result, &mut n);
        for i in 0..n {
            let a = *acls.add(i);
            rows.push([
                text(b::rd_kafka_AclBinding_principal(a)),
                format!("{:?}", b::rd_kafka_AclBinding_permission_type(a))
                    .trim_start_matches("RD_KAFKA_ACL_PERMISSION_TYPE_")
                    .to_string(),
                format!("{:?}", b::rd_kafka_AclBinding_operation(a))
                    .trim_start_matches("RD_KAFKA_ACL_OPERATION_")
                    .to_string(),
                text(b::rd_kafka_AclBinding_host(a)),
                format!("{:?}", b::rd_kafka_AclBinding_restype(a))
                    .trim_start_matches("RD_KAFKA_RESOURCE_")
                    .replace("BROKER", "CLUSTER"),
                format!("{:?}", b::rd_kafka_AclBinding_resource_pattern_type(a))
                    .trim_start_matches("RD_KAFKA_RESOURCE_PATTERN_")
                    .to_string(),
                text(b::rd_kafka_AclBinding_name(a)),
            ]);
        }
    }
    rows.sort();
    let header = [
        "PRINCIPAL",
        "PERMISSION",
        "OPERATION",
        "HOST",
        "RESOURCE",
        "PATTERN",
        "NAME",
    ];
    let mut t = table(header);
    let mut listed: Vec<Value> = Vec::new();
    for r in rows {
        let fields: serde_json::Map<String, Value> = header
            .iter()
            .zip(&r)
            .map(|(h, v)| (h.to_lowercase(), json!(v)))
            .collect();
        listed.push(Value::Object(fields));
        t.add_row(r.to_vec());
    }
    emit(c.format, &json!({ "acls": listed }), &[("", t)]);
    Ok(())
}
